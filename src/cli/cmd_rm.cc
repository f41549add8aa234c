// `pensieve rm REPO`: deletes a model from the Hugging Face cache.
#include <iostream>

#include "cli/command.h"
#include "hub/cache.h"
#include "hub/hub.h"
#include "hub/progress_printer.h"

namespace pensieve::cli {
namespace {

struct RmOpts {
  std::string repo;
};

RegisterCommand reg("rm", [](CLI::App& app) {
  app.description("Delete a model from the Hugging Face cache");
  auto opts = std::make_shared<RmOpts>();
  app.add_option("repo", opts->repo, "ORG/NAME")->required();
  return std::function<int()>([opts] {
    // Only the cache folder matters here: a bad HF_ENDPOINT or timeout must not stop it.
    const hub::HubCache cache(hub::default_cache_dir());
    const uint64_t n_bytes = hub::remove_cached_model(cache, opts->repo);
    std::cout << "removed " << opts->repo << " (" << hub::format_bytes(n_bytes) << ")\n";
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
