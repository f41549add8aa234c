// What the hub code reads back from the cache and from the Hub's headers:
// refs/<revision> (a commit id), a snapshot's model.safetensors.index.json,
// blobs/*.incomplete (partial downloads), a repo reference typed by the user,
// and size / etag headers.
// Input: REPO_REF #### REFS_MAIN #### INDEX_JSON #### INCOMPLETE_BYTES #### HEADER.
// Contract: pensieve::Error or success, never another exception or a crash.
#include "core/error.h"
#include "fuzz_support.h"
#include "hub/cache.h"
#include "hub/hub_client.h"
#include "hub/repo_id.h"

using namespace pensieve;
using namespace pensieve::hub;

namespace {

template <class F>
void expect_only_errors(const char* what, F&& f) {
  try {
    f();
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::contract_broken(what, e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parts = fuzz::split_parts(data, size, 5);
  expect_only_errors("parse_repo_ref", [&] { (void)parse_repo_ref(parts[0]); });
  expect_only_errors("parse_size_header", [&] { (void)parse_size_header(parts[4], "f"); });
  expect_only_errors("etag", [&] { validate_etag(normalize_etag(parts[4]), "f"); });

  const std::string root = fuzz::scratch_dir();
  HubCache cache(root);
  const std::string repo = "org/name";
  const std::string commit = "0123456789abcdef0123456789abcdef01234567";
  fuzz::write_file(cache.ref_path(repo, "main"), parts[1]);
  const std::string snap = cache.snapshot_dir(repo, commit);
  fuzz::write_file(snap + "/config.json", "{}");
  fuzz::write_file(snap + "/model.safetensors.index.json", parts[2]);
  fuzz::write_file(cache.incomplete_path(repo, "abc"), parts[3]);
  fuzz::write_file(cache.blob_path(repo, "def"), parts[3]);
  expect_only_errors("find_snapshot", [&] {
    if (auto dir = cache.find_snapshot(repo, "main")) (void)snapshot_problem(*dir);
  });
  expect_only_errors("snapshot_problem", [&] { (void)snapshot_problem(snap); });
  expect_only_errors("list_cached_models", [&] { (void)list_cached_models(cache); });
  return 0;
}
