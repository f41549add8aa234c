// `pensieve list`: the models in the Hugging Face cache, with their sizes,
// and the GGUF models Ollama and LM Studio keep (served in place).
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "format/local_models.h"
#include "hub/cache.h"
#include "hub/hub.h"
#include "hub/progress_printer.h"

namespace pensieve::cli {
namespace {

struct ListOpts {
  bool json = false;
};

RegisterCommand reg("list", [](CLI::App& app) {
  app.description("List the models in the Hugging Face cache, Ollama's store and LM Studio's folder");
  auto opts = std::make_shared<ListOpts>();
  app.add_flag("--json", opts->json, "print JSON");
  return std::function<int()>([opts] {
    // Only the cache folder matters here: a bad HF_ENDPOINT or timeout must not stop it.
    const hub::HubCache cache(hub::default_cache_dir());
    const auto models = hub::list_cached_models(cache);
    std::vector<LocalGguf> ggufs = list_ollama_models();
    for (auto& g : list_lmstudio_models()) ggufs.push_back(std::move(g));
    if (opts->json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& m : models) {
        out.push_back({{"repo", m.repo}, {"path", m.path}, {"bytes", m.n_bytes},
                       {"partial_bytes", m.n_partial_bytes}, {"refs", m.refs},
                       {"snapshots", m.snapshots}});
      }
      for (const auto& g : ggufs) out.push_back({{"source", g.source}, {"model", g.name}, {"path", g.path}, {"bytes", g.bytes}});
      std::cout << out.dump(2) << "\n";
      return 0;
    }
    if (models.empty()) std::cout << "no models in " << cache.root() << "\n";
    if (!ggufs.empty()) {
      std::cout << fmt::format("{:<48} {:>10}  {}\n", "GGUF (--model)", "SIZE", "FROM");
      for (const auto& g : ggufs)
        std::cout << fmt::format("{:<48} {:>10}  {}\n", g.name, hub::format_bytes(g.bytes),
                                 g.source == "ollama" ? "Ollama" : "LM Studio");
    }
    if (models.empty()) return 0;
    std::cout << fmt::format("{:<48} {:>10}  {}\n", "REPO", "SIZE", "REVISIONS");
    for (const auto& m : models) {
      std::string revisions;
      for (const auto& [name, commit] : m.refs) {
        revisions += (revisions.empty() ? "" : ", ") + name + " (" + commit.substr(0, 7) + ")";
      }
      if (revisions.empty()) revisions = std::to_string(m.snapshots.size()) + " snapshot(s)";
      if (m.n_partial_bytes > 0) {
        revisions += " +" + hub::format_bytes(m.n_partial_bytes) + " partial";
      }
      std::cout << fmt::format("{:<48} {:>10}  {}\n", m.repo, hub::format_bytes(m.n_bytes),
                               revisions);
    }
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
