// GGUF models through the commands: a file, a folder holding one, an Ollama
// model (`ollama:NAME[:TAG]`, read in place from its store) and LM Studio's
// folder in `pensieve list`; damaged or unsupported files get one line
// naming the file and the problem and a non-zero exit.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "format/gguf_writer.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// HOME for the commands this test runs (restored after).
class HomeDir {
 public:
  explicit HomeDir(const std::string& home) {
    if (const char* h = std::getenv("HOME")) old_ = h;
    ::setenv("HOME", home.c_str(), 1);
    ::unsetenv("OLLAMA_MODELS");
  }
  ~HomeDir() { ::setenv("HOME", old_.c_str(), 1); }

 private:
  std::string old_;
};

// A fake home with Ollama's store (stories260K as library/stories:8b, its
// blob named by digest as Ollama names it) and LM Studio's folder.
void make_stores(const test::TempDir& home) {
  const fs::path ollama = fs::path(home.path()) / ".ollama/models";
  fs::create_directories(ollama / "manifests/registry.ollama.ai/library/stories");
  fs::create_directories(ollama / "blobs");
  fs::copy_file(test::data_path("gguf/stories260K-F16.gguf"), ollama / "blobs/sha256-5e1f0a");
  test::write_file((ollama / "manifests/registry.ollama.ai/library/stories/8b").string(),
                   R"({"schemaVersion": 2, "layers": [)"
                   R"({"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:5e1f0a", "size": 1},)"
                   R"({"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:77"}]})");
  const fs::path lms = fs::path(home.path()) / ".lmstudio/models/someone/stories-GGUF";
  fs::create_directories(lms);
  fs::copy_file(test::data_path("gguf/stories260K-Q8_0.gguf"), lms / "stories-Q8_0.gguf");
  fs::copy_file(test::data_path("gguf/stories260K-F16.gguf"), lms / "mmproj-stories.gguf");  // not a model
}

TEST(GgufCli, ListShowsOllamaAndLmStudioModels) {
  test::TempDir home;
  make_stores(home);
  HomeDir env(home.path());
  auto r = test::run_pensieve("list");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ollama:stories:8b"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("someone/stories-GGUF/stories-Q8_0.gguf"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("mmproj"), std::string::npos) << r.out;
  r = test::run_pensieve("list --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  int ollama = 0, lmstudio = 0;
  for (const json& m : j) {
    if (m.value("source", "") == "ollama") {
      ++ollama;
      EXPECT_EQ(m["model"], "ollama:stories:8b");
      EXPECT_EQ(m["bytes"], fs::file_size(test::data_path("gguf/stories260K-F16.gguf")));
    }
    if (m.value("source", "") == "lmstudio") ++lmstudio;
  }
  EXPECT_EQ(ollama, 1);
  EXPECT_EQ(lmstudio, 1);
}

TEST(GgufCli, GeneratesFromAFileAFolderAndAnOllamaModel) {
  test::TempDir home;
  make_stores(home);
  HomeDir env(home.path());
  test::TempDir folder;
  fs::copy_file(test::data_path("gguf/stories260K-F16.gguf"), folder.file("model.gguf"));
  for (const std::string& model : {test::data_path("gguf/stories260K-F16.gguf"), folder.path(),
                                  std::string("ollama:stories:8b")}) {
    const auto r = test::run_pensieve("generate --model " + model + " --prompt 'Once upon a time' --max-tokens 12");
    ASSERT_EQ(r.exit_code, 0) << model << ": " << r.err;
    const json j = json::parse(r.out);
    // llama.cpp's greedy story goes on ", there was a little girl named Lily."
    EXPECT_EQ(j["text"].get<std::string>().rfind(", there was a little girl named Lily", 0), 0u) << model << ": " << j;
  }
  const auto missing = test::run_pensieve("generate --model ollama:nothere --prompt x");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("ollama:nothere: no such model in Ollama's store"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("ollama:stories:8b"), std::string::npos) << missing.err;
}

TEST(GgufCli, ServesAnOllamaModelUnderItsName) {
  test::TempDir home;
  make_stores(home);
  HomeDir env(home.path());
  test::ServeProcess serve({"--model", "ollama:stories:8b", "--port", "0", "--ctx-size", "256"});
  ASSERT_TRUE(serve.wait_ready()) << serve.err();
  httplib::Client client("127.0.0.1", serve.port());
  auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_NE(models->body.find("\"id\":\"stories:8b\""), std::string::npos) << models->body;
  auto answer = client.Post(
      "/v1/messages", R"({"model":"stories:8b","max_tokens":8,"messages":[{"role":"user","content":"Once upon a time"}]})",
      "application/json");
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 200) << answer->body;
  EXPECT_EQ(serve.stop(), 0) << serve.err();
}

TEST(GgufCli, DamagedAndUnsupportedFilesGetOneLine) {
  test::TempDir dir;
  const std::string good = test::read_file(test::data_path("gguf/stories260K-Q8_0.gguf"));
  auto check = [&](const std::string& name, const std::string& bytes, const std::string& what) {
    test::write_file(dir.file(name), bytes);
    const auto r = test::run_pensieve("bench --model " + dir.file(name) + " --prompt-tokens 4 --gen-tokens 2");
    EXPECT_NE(r.exit_code, 0) << name;
    EXPECT_NE(r.err.find(dir.file(name)), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << "expected '" << what << "' in: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  };
  check("truncated.gguf", good.substr(0, good.size() / 2), "past the end of the file");
  check("magic.gguf", "GGML" + good.substr(4), "not a GGUF file");
  std::string v9 = good;
  v9[4] = 9;
  check("version.gguf", v9, "GGUF version 9 is not supported");
  GgufWriter w;
  w.set("general.architecture", std::string("falcon"));
  w.set("tokenizer.ggml.model", std::string("llama"));
  w.set("tokenizer.ggml.tokens", std::vector<std::string>{"<unk>", "<s>", "</s>", "a"});
  w.write(dir.file("falcon.gguf"));
  check("falcon-copy.gguf", test::read_file(dir.file("falcon.gguf")), "architecture 'falcon' is not supported");
}

}  // namespace
}  // namespace pensieve
