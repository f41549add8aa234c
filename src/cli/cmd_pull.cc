// `pensieve pull REPO[@REVISION]`: downloads a model into the Hugging Face
// cache and prints its snapshot folder. Ctrl-C stops it cleanly, keeping the
// partial file so the next pull resumes.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>

#include "cli/command.h"
#include "core/error.h"
#include "hub/hub.h"
#include "hub/progress_printer.h"
#include "hub/repo_id.h"

namespace pensieve::cli {
namespace {

std::atomic<bool> g_interrupted{false};

void on_interrupt(int) {
  g_interrupted.store(true);
  // A second Ctrl-C kills at once.
  struct sigaction dflt {};
  dflt.sa_handler = SIG_DFL;
  sigaction(SIGINT, &dflt, nullptr);
}

struct PullOpts {
  std::string model;
  std::string revision;
  bool quiet = false;
};

RegisterCommand reg("pull", [](CLI::App& app) {
  app.description("Download a model from the Hugging Face Hub into the shared cache");
  auto opts = std::make_shared<PullOpts>();
  app.add_option("model", opts->model, "ORG/NAME or ORG/NAME@REVISION (branch, tag or commit)")
      ->required();
  app.add_option("--revision", opts->revision, "branch, tag or commit (default: main)");
  app.add_flag("-q,--quiet", opts->quiet, "no progress output");
  return std::function<int()>([opts] {
    hub::RepoRef ref = hub::parse_repo_ref(opts->model);
    if (!opts->revision.empty()) {
      hub::validate_revision(opts->revision);
      // Two revisions that disagree: neither silently wins.
      if (opts->model.find('@') != std::string::npos && ref.revision != opts->revision)
        fail("--revision {} and {} name different revisions: give the revision once", opts->revision,
             opts->model);
      ref.revision = opts->revision;
    }
    hub::HubOptions options = hub::HubOptions::from_env();
    options.cancel = &g_interrupted;
    struct sigaction action {};
    action.sa_handler = on_interrupt;
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
    // A file size limit (ulimit -f) should fail a write with EFBIG, not kill us.
    signal(SIGXFSZ, SIG_IGN);

    hub::ProgressPrinter printer(stderr, isatty(STDERR_FILENO) != 0);
    hub::ProgressCallback progress;
    if (!opts->quiet) progress = [&](const hub::PullProgress& p) { printer.update(p); };
    hub::PullResult result;
    try {
      result = hub::pull(ref.repo, ref.revision, options, progress);
    } catch (const Error& e) {
      printer.finish();
      if (!g_interrupted.load()) throw;
      std::fprintf(stderr, "interrupted: %s\n", e.what());
      return 130;
    }
    printer.finish();
    if (!opts->quiet) {
      std::fprintf(stderr, "%s@%s is commit %s: %zu files, %s downloaded%s\n",
                   result.repo.c_str(), ref.revision.c_str(), result.commit.c_str(),
                   result.n_files, hub::format_bytes(result.n_bytes_downloaded).c_str(),
                   result.used_cache_only ? " (from the cache)" : "");
    }
    std::cout << result.snapshot_dir << "\n";
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
