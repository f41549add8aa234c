// `pensieve serve` with [models.NAME] tables: the real binary serves two
// models by name, alias and Claude family, loads the second on first use and
// unloads the least recently used one when both do not fit --models-memory;
// a broken table or a name given twice stops it with one line.
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace pensieve {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string stories_dir() { return fs::canonical(test::data_path("../../models/stories260K")).string(); }

// Two copies of stories260K under two names, each with a 4 MiB KV pool:
// about 5 MiB each, so 8 MiB holds one of them.
std::string two_models(const std::string& extra = "") {
  const std::string dir = stories_dir();
  return "port = 0\nmodels-memory = \"8M\"\nhaiku-model = \"story-b\"\n" + extra +
         "\n[models.story-a]\nmodel = \"" + dir +
         "\"\naliases = [\"gpt-4o-mini\"]\nkv-memory = \"4M\"\nctx-size = 1024\nmax-output-tokens = 8\n"
         "\n[models.story-b]\nmodel = \"" + dir + "\"\nkv-memory = \"4M\"\nctx-size = 1024\n";
}

struct Answer {
  int status = -1;
  json body;
};

Answer post(int port, const std::string& model) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  const json req = {{"model", model},
                    {"max_tokens", 8},
                    {"temperature", 0},
                    {"messages", {{{"role", "user"}, {"content", "Once upon a time"}}}}};
  auto res = c.Post("/v1/messages", req.dump(), "application/json");
  if (!res) return {};
  return {res->status, json::parse(res->body, nullptr, false)};
}

std::map<std::string, std::string> states(int port) {
  httplib::Client c("127.0.0.1", port);
  auto res = c.Get("/health");
  std::map<std::string, std::string> out;
  if (!res) return out;
  const json health = json::parse(res->body);
  for (const auto& m : health["models"]) out[m["id"]] = m["state"];
  return out;
}

TEST(ServeModels, ServesSeveralModelsByNameLoadingAndUnloadingThem) {
  test::TempDir dir;
  test::write_file(dir.file("c.toml"), two_models());
  test::ServeProcess serve({"--config", dir.file("c.toml")});
  ASSERT_TRUE(serve.wait_ready()) << serve.err();
  EXPECT_NE(serve.out().find("serving story-a on"), std::string::npos) << serve.out();
  EXPECT_NE(serve.out().find("and story-b (loads on first use)"), std::string::npos) << serve.out();
  const int port = serve.port();
  using S = std::map<std::string, std::string>;
  EXPECT_EQ(states(port), (S{{"story-a", "loaded"}, {"story-b", "unloaded"}}));

  // Claude Code's background request names a Haiku: story-b loads, and
  // story-a (idle) makes room for it.
  Answer haiku = post(port, "claude-3-5-haiku-20241022");
  ASSERT_EQ(haiku.status, 200) << haiku.body.dump() << serve.err();
  EXPECT_EQ(haiku.body["model"], "story-b");
  EXPECT_EQ(states(port), (S{{"story-a", "unloaded"}, {"story-b", "loaded"}}));
  // The alias brings story-a back, and story-b goes.
  Answer alias = post(port, "gpt-4o-mini");
  ASSERT_EQ(alias.status, 200) << alias.body.dump();
  EXPECT_EQ(alias.body["model"], "story-a");
  EXPECT_EQ(states(port), (S{{"story-a", "loaded"}, {"story-b", "unloaded"}}));
  // The same model by its id, and by any other claude-* name (the default).
  EXPECT_EQ(post(port, "story-a").body["model"], "story-a");
  EXPECT_EQ(post(port, "claude-sonnet-4-5").body["model"], "story-a");
  // A name that matches nothing.
  Answer none = post(port, "llama-70b");
  EXPECT_EQ(none.status, 404);
  EXPECT_EQ(none.body["error"]["type"], "not_found_error");
  EXPECT_NE(none.body["error"]["message"].get<std::string>().find("model: llama-70b"), std::string::npos);

  httplib::Client c("127.0.0.1", port);
  auto list = c.Get("/v1/models", {{"anthropic-version", "2023-06-01"}});
  ASSERT_TRUE(list);
  std::vector<std::string> ids;
  const json page = json::parse(list->body);
  for (const auto& m : page["data"]) ids.push_back(m["id"]);
  EXPECT_EQ(ids, (std::vector<std::string>{"story-a", "gpt-4o-mini", "claude-story-a", "story-b", "claude-story-b"}));
  auto health = json::parse(c.Get("/health")->body);
  EXPECT_EQ(health["model_memory"]["budget_bytes"], 8 << 20);
  EXPECT_LE(health["model_memory"]["used_bytes"].get<int64_t>(), 8 << 20);
  EXPECT_EQ(health["claude_families"]["haiku"], "story-b");
  EXPECT_EQ(serve.stop(), 0) << serve.err();
  EXPECT_NE(serve.err().find("unloading model story-a"), std::string::npos) << serve.err();
}

TEST(ServeModels, TheTopLevelModelComesFirstAndTablesAddToIt) {
  test::TempDir dir;
  test::write_file(dir.file("c.toml"),
                   "port = 0\nmodel = \"" + stories_dir() + "\"\nmodel-id = \"main\"\naliases = \"m1, m2\"\n"
                   "kv-memory = \"4M\"\nctx-size = 1024\n\n[models.extra]\nmodel = \"" + stories_dir() +
                   "\"\nload-at-start = true\nkv-memory = \"4M\"\nctx-size = 1024\n");
  test::ServeProcess serve({"--config", dir.file("c.toml")});
  ASSERT_TRUE(serve.wait_ready()) << serve.err();
  EXPECT_NE(serve.out().find("serving main on"), std::string::npos) << serve.out();
  EXPECT_NE(serve.out().find("and extra (loaded)"), std::string::npos) << serve.out();
  EXPECT_EQ(post(serve.port(), "m2").body["model"], "main");
  EXPECT_EQ(post(serve.port(), "extra").body["model"], "extra");
  EXPECT_EQ(serve.stop(), 0);
}

TEST(ServeModels, BrokenTablesAndNamesStopItWithOneLine) {
  test::TempDir dir;
  const std::string f = dir.file("c.toml");
  const struct {
    std::string text;
    std::vector<std::string> parts;
  } cases[] = {
      {"[models.x]\nmodel = \"/no/such/folder\"\n", {f + ":1: models.x.model", "/no/such/folder", "no such folder"}},
      {two_models("model-id = \"story-b\"\nmodel = \"" + stories_dir() + "\"\n"),
       {"two models are named 'story-b'", f}},
      {two_models("default-model = \"story-c\"\n"), {"the default model 'story-c' names no served model"}},
      {two_models("opus-model = \"gpt-5\"\n"), {"the opus model 'gpt-5' names no served model",
                                               "served: story-a, story-b"}},
      {"aliases = \"x\"\n[models.x]\nmodel = \"" + stories_dir() + "\"\n", {"--aliases", "--model, which is not given"}},
  };
  for (const auto& c : cases) {
    test::write_file(f, c.text);
    const auto r = test::run_pensieve("serve --config " + f);
    EXPECT_NE(r.exit_code, 0) << c.text;
    const std::string last = r.err.substr(r.err.rfind("error:") == std::string::npos ? 0 : r.err.rfind("error:"));
    for (const auto& p : c.parts) EXPECT_NE(last.find(p), std::string::npos) << p << "\n" << r.err;
    EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << "one line: " << last;
  }
}

}  // namespace
}  // namespace pensieve
