// Shows a pull's progress to a person: a redrawn one-line bar on a terminal
// (bytes, rate, ETA, file), plain lines otherwise (one per file, and a status
// line every few seconds), so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <string>

#include "hub/hub.h"

namespace pensieve::hub {

std::string format_bytes(uint64_t n_bytes);      // "1.5 GiB"
std::string format_duration(double seconds);     // "0:42", "1:02:03", "?" when unknown

// "[########------]  57%  1.5 GiB / 2.7 GiB  35.2 MiB/s  ETA 0:42"
std::string progress_line(const PullProgress& progress, double bytes_per_second, int bar_width);

class ProgressPrinter {
 public:
  ProgressPrinter(std::FILE* out, bool terminal,
                  std::chrono::milliseconds plain_interval = std::chrono::seconds(5));
  void update(const PullProgress& progress);
  // Ends the bar's line on a terminal.
  void finish();

 private:
  double rate(std::chrono::steady_clock::time_point now, uint64_t bytes_done);

  std::FILE* out_;
  bool terminal_;
  std::chrono::milliseconds plain_interval_;
  std::chrono::steady_clock::time_point last_print_{};
  std::string last_file_;
  bool bar_shown_ = false;
  // (time, bytes) over the last few seconds, for the rate.
  std::deque<std::pair<std::chrono::steady_clock::time_point, uint64_t>> samples_;
};

}  // namespace pensieve::hub
