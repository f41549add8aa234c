// pensieve bench: load time, prompt and decode speed, peak memory.
#include <fmt/format.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/command.h"
#include "format/gguf.h"
#include "core/error.h"
#include "core/mmap_file.h"
#include "engine/session.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/cpu_features.h"
#include "models/model.h"
#include "quant/weight_matrix.h"

namespace pensieve::cli {
namespace {

struct Opts {
  std::string model, device = "auto";
  std::string kv_type = "f16";
  int threads = 0;
  int64_t prompt_tokens = 512, gen_tokens = 128;
  bool json = false;
  bool mmap = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

int64_t dir_safetensors_bytes(const std::string& dir) { return model_weight_file_bytes(dir); }

// "260.2K", "12.5M", "3.82B": a parameter count at any scale.
std::string format_count(int64_t n) {
  if (n >= 1'000'000'000) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.1f}M", n / 1e6);
  if (n >= 1'000) return fmt::format("{:.1f}K", n / 1e3);
  return std::to_string(n);
}

// The kernel prefill ran on. The integer kernels (VNNI, AMX) take quantized
// weights only: float weights go through the f32 kernel of the ISA, which
// prefill_kernel_name() names while the integer kernels are off.
std::string prefill_kernel(const std::string& weight_format) {
  const bool quantized = weight_format != weight_format_name(WeightFormat::f32) &&
                         weight_format != weight_format_name(WeightFormat::f16) &&
                         weight_format != weight_format_name(WeightFormat::bf16);
  if (quantized || !kernels::integer_kernels_enabled()) return kernels::prefill_kernel_name();
  kernels::set_integer_kernels(false);
  std::string name = kernels::prefill_kernel_name();
  kernels::set_integer_kernels(true);
  return name;
}

RegisterCommand reg("bench", [](CLI::App& app) {
  app.description("Measure load time, prefill and decode tokens/s and peak memory");
  auto o = std::make_shared<Opts>();
  app.add_option("--model", o->model, "model directory")->required();
  add_threads_option(app, o->threads);
  app.add_option("--prompt-tokens", o->prompt_tokens, "prompt length")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--gen-tokens", o->gen_tokens, "tokens to decode")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_device_option(app, o->device);
  add_kv_type_option(app, o->kv_type);
  app.add_flag("--json", o->json, "print one JSON object");
  app.add_flag("--mmap", o->mmap,
               "use the weights mapped from the page cache instead of read into memory");
  return std::function<int()>([o] {
    if (o->mmap) set_default_file_residency(FileResidency::mapped);
    auto t0 = std::chrono::steady_clock::now();
    LoadOptions lo;
    lo.n_threads = o->threads;
    lo.prefault = true;
    lo.device = o->device;
    lo.kv_type = *parse_kv_type(o->kv_type);
    auto model = load_model(o->model, lo);
    const double load_s = seconds_since(t0);
    const ModelConfig& c = model->config();
    const int64_t ctx = o->prompt_tokens + o->gen_tokens;
    const bool on_gpu = std::string(model->backend().device()) != "cpu";
    if (on_gpu) {
      // A GPU's first prompt step loads kernels and picks cuBLAS algorithms
      // (40 ms of a 75 ms 512-token prompt on an H200): one untimed step of
      // the same shape first, as llama-bench warms up.
      Session warm(*model, std::min<int64_t>(ctx, model->backend().step_tokens()) + 1);
      std::vector<int32_t> w(static_cast<size_t>(std::min<int64_t>(o->prompt_tokens, model->backend().step_tokens())), 1);
      warm.append(w, false);
      const int32_t one[1] = {1};
      warm.append(one, false);
    }
    Session session(*model, ctx);
    // The KV pages are written before the clock starts, as in a server whose
    // pool earlier requests have used (first-touch costs are docs/benchmarks.md's).
    model->commit_kv();
    std::vector<int32_t> prompt(o->prompt_tokens);
    for (int64_t i = 0; i < o->prompt_tokens; ++i) {
      prompt[i] = static_cast<int32_t>((i * 7919 + 17) % c.vocab_size);
    }
    t0 = std::chrono::steady_clock::now();
    std::vector<float> logits = session.append(prompt, false);
    const double prefill_s = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < o->gen_tokens; ++i) {
      const int32_t next[1] = {static_cast<int32_t>((i * 31 + 5) % c.vocab_size)};
      logits = session.append(next, false);
    }
    const double decode_s = seconds_since(t0);
    const ModelInfo info = model->info();
    const std::string kernel = prefill_kernel(info.weight_format);
    const int64_t kv_bytes = model->kv_bytes_per_block() * model->kv_blocks();
    // The card's memory in use at the end (on a GPU of its own, this
    // process's: context, library work space and caching included), to
    // hold against device_memory_bytes (what the backend allocated).
    int64_t device_used = 0;
    if (on_gpu) {
      const MemoryInfo m = model->backend().memory();
      device_used = m.total - m.available;
    }
    const std::string out = fmt::format(
        "{{\"model\": \"{}\", \"device\": \"{}\", \"backend\": \"{}\", \"architecture\": \"{}\", \"weight_format\": \"{}\", "
        "\"n_params\": {}, \"model_file_bytes\": {}, \"kv_type\": \"{}\", \"kv_cache_bytes\": {}, "
        "\"isa\": \"{}\", \"prefill_kernel\": \"{}\", \"threads\": {}, \"weights\": \"{}\", \"load_s\": {:.3f}, \"prompt_tokens\": {}, "
        "\"prefill_s\": {:.3f}, \"prefill_tok_s\": {:.2f}, \"gen_tokens\": {}, "
        "\"decode_s\": {:.3f}, \"decode_tok_s\": {:.2f}, \"decode_weight_bytes_per_token\": {}, "
        "\"decode_read_gb_s\": {:.2f}, \"peak_rss_bytes\": {}, \"device_memory_bytes\": {}, \"device_used_bytes\": {}, "
        "\"warmup\": {}}}",
        o->model, model->backend().device(), model->backend().description(), c.architecture,
        info.weight_format, info.n_params,
        dir_safetensors_bytes(o->model), o->kv_type, kv_bytes, kernels::isa_name(kernels::active_isa()), kernel,
        model->backend().n_threads(),
        default_file_residency() == FileResidency::mapped ? "mapped" : "copied", load_s, o->prompt_tokens, prefill_s, o->prompt_tokens / prefill_s,
        o->gen_tokens, decode_s, o->gen_tokens / decode_s, info.decode_bytes_per_token,
        info.decode_bytes_per_token * (o->gen_tokens / decode_s) / 1e9, peak_rss_bytes(),
        model->backend().bytes_allocated(), device_used, on_gpu ? "true" : "false");
    if (o->json) {
      std::printf("%s\n", out.c_str());
    } else {
      std::printf("model        %s (%s, %s, %s params)\n", o->model.c_str(), c.architecture.c_str(),
                  info.weight_format.c_str(), format_count(info.n_params).c_str());
      std::printf("threads      %d (%s, prefill kernel %s)\n", model->backend().n_threads(),
                  kernels::isa_name(kernels::active_isa()), kernel.c_str());
      std::printf("backend      %s\n", model->backend().description().c_str());
      std::printf("load         %.2f s\n", load_s);
      std::printf("prefill      %lld tokens in %.2f s = %.2f tok/s\n",
                  static_cast<long long>(o->prompt_tokens), prefill_s, o->prompt_tokens / prefill_s);
      std::printf("decode       %lld tokens in %.2f s = %.2f tok/s\n",
                  static_cast<long long>(o->gen_tokens), decode_s, o->gen_tokens / decode_s);
      std::printf("decode reads %.2f GB/s of weights (%.1f MiB per token; compare membw)\n",
                  info.decode_bytes_per_token * (o->gen_tokens / decode_s) / 1e9,
                  info.decode_bytes_per_token / 1048576.0);
      std::printf("peak RSS     %.1f MiB (weights file %.1f MiB, KV cache %.1f MiB %s)\n",
                  peak_rss_bytes() / 1048576.0, dir_safetensors_bytes(o->model) / 1048576.0,
                  kv_bytes / 1048576.0, o->kv_type.c_str());
    }
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
