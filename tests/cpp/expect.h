// The C++ tests' failure counter: EXPECT(cond, printf-format, ...) counts a failure and
// prints the first 30; main() reports `failures` and returns non-zero when any occurred.
#pragma once

#include <cstdio>

inline int failures = 0;

#define EXPECT(cond, ...)                            \
  do {                                               \
    if (!(cond)) {                                   \
      if (failures++ < 30) std::printf(__VA_ARGS__); \
    }                                                \
  } while (0)
