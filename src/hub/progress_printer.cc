#include "hub/progress_printer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace pensieve::hub {
namespace {

constexpr auto kTerminalInterval = std::chrono::milliseconds(100);
constexpr auto kRateWindow = std::chrono::seconds(5);

}  // namespace

std::string format_bytes(uint64_t n_bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(n_bytes);
  int unit = 0;
  while (value >= 1024 && unit < 5) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{} B", n_bytes) : fmt::format("{:.1f} {}", value, units[unit]);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 99 * 3600) return "?";
  const auto total = static_cast<long>(std::lround(seconds));
  if (total >= 3600) return fmt::format("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60);
  return fmt::format("{}:{:02}", total / 60, total % 60);
}

std::string progress_line(const PullProgress& progress, double bytes_per_second, int bar_width) {
  const double fraction =
      progress.bytes_total == 0
          ? 1.0
          : std::clamp(static_cast<double>(progress.bytes_done) /
                           static_cast<double>(progress.bytes_total), 0.0, 1.0);
  std::string line;
  if (bar_width > 0) {
    const int n_filled = static_cast<int>(fraction * bar_width);
    line = "[" + std::string(n_filled, '#') + std::string(bar_width - n_filled, '-') + "] ";
  }
  const double remaining = static_cast<double>(progress.bytes_total - std::min(
                                                   progress.bytes_total, progress.bytes_done));
  const double eta = bytes_per_second > 0 ? remaining / bytes_per_second : -1;
  line += fmt::format("{:3.0f}%  {} / {}  {}/s  ETA {}", fraction * 100,
                      format_bytes(progress.bytes_done), format_bytes(progress.bytes_total),
                      format_bytes(static_cast<uint64_t>(bytes_per_second)),
                      format_duration(eta));
  return line;
}

ProgressPrinter::ProgressPrinter(std::FILE* out, bool terminal,
                                 std::chrono::milliseconds plain_interval)
    : out_(out), terminal_(terminal), plain_interval_(plain_interval) {}

double ProgressPrinter::rate(std::chrono::steady_clock::time_point now, uint64_t bytes_done) {
  samples_.emplace_back(now, bytes_done);
  while (samples_.size() > 2 && now - samples_.front().first > kRateWindow) samples_.pop_front();
  const double seconds =
      std::chrono::duration<double>(now - samples_.front().first).count();
  if (seconds < 0.2) return 0;
  return static_cast<double>(bytes_done - std::min(bytes_done, samples_.front().second)) / seconds;
}

void ProgressPrinter::update(const PullProgress& progress) {
  using Stage = PullProgress::Stage;
  const auto now = std::chrono::steady_clock::now();
  if (progress.stage == Stage::resolving) {
    fmt::print(out_, "resolving {}\n", progress.repo);
    std::fflush(out_);
    return;
  }
  if (progress.stage == Stage::done) return;
  // Rate over newly received bytes only, so resumed bytes don't inflate it.
  const double speed = rate(now, progress.bytes_done - std::min(progress.bytes_done,
                                                                progress.bytes_resumed));
  const bool new_file = progress.file != last_file_;
  if (terminal_) {
    if (!new_file && progress.stage == Stage::downloading && now - last_print_ < kTerminalInterval)
      return;
    last_print_ = now;
    last_file_ = progress.file;
    fmt::print(out_, "\r{}  ({}/{}) {}\x1b[K", progress_line(progress, speed, 30),
               progress.file_index, progress.n_files, progress.file);
    bar_shown_ = true;
    std::fflush(out_);
    return;
  }
  if (new_file && !progress.file.empty()) {
    last_file_ = progress.file;
    fmt::print(out_, "downloading {} ({}/{}, {})\n", progress.file, progress.file_index,
               progress.n_files, format_bytes(progress.file_bytes_total));
    last_print_ = now;
  } else if (progress.stage == Stage::file_done) {
    fmt::print(out_, "verified {}\n", progress.file);
  } else if (now - last_print_ >= plain_interval_) {
    fmt::print(out_, "{}\n", progress_line(progress, speed, 0));
    last_print_ = now;
  }
  std::fflush(out_);
}

void ProgressPrinter::finish() {
  if (terminal_ && bar_shown_) fmt::print(out_, "\n");
  bar_shown_ = false;
  std::fflush(out_);
}

}  // namespace pensieve::hub
