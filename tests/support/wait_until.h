// Waiting in a test for something another thread or process does. Every
// such wait has a deadline, and a generous one: without a deadline a broken
// build hangs until CTest kills it minutes later and says nothing useful;
// with a tight one the test fails whenever the machine is busy.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace pensieve::test {

// Long enough that only a real failure runs past it, even on two loaded cores.
inline constexpr std::chrono::seconds kWaitDeadline{30};

// Polls `done` every few milliseconds; true once it holds, false when
// `timeout` passed first. Use as ASSERT_TRUE(wait_until(...)) << "what".
inline bool wait_until(const std::function<bool()>& done,
                       std::chrono::milliseconds timeout = kWaitDeadline) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace pensieve::test
