// Several models in one server: the registry's names, lazy loading and LRU
// unloading under a memory budget (scripted models with sizes), and the
// routes that list and pick models (GET /v1/models pagination, 404 for
// unknown names, /health and /metrics per model).
#include <gtest/gtest.h>
#include <httplib.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "scripted_backend.h"
#include "server/api_error.h"
#include "server/model_registry.h"
#include "server/server.h"
#include "support/test_support.h"
#include "support/wait_until.h"

namespace pensieve::server {
namespace {

using json = nlohmann::ordered_json;

// Scripted models that "hold" a given number of bytes. Loads can be held at a
// gate (to see requests wait for one load) or made to fail.
class ScriptedLoader : public ModelLoader {
 public:
  struct Model : LoadedModel {
    Model(ScriptedLoader& l, const std::string& id, int64_t b) : loader(l), bytes(b) { backend_.model.id = id; }
    ~Model() override {
      std::lock_guard<std::mutex> lock(loader.mutex);
      loader.unloaded.push_back(backend_.model.id);
      loader.held -= bytes;
    }
    Backend& backend() override { return backend_; }
    int64_t memory_bytes() const override { return bytes; }
    test::ScriptedBackend& scripted() { return backend_; }
    ScriptedLoader& loader;
    int64_t bytes;
    test::ScriptedBackend backend_;
  };

  std::map<std::string, int64_t> bytes;     // what each model holds once loaded
  std::map<std::string, int64_t> estimate;  // what it is estimated at (default: bytes)
  int64_t capacity = -1;                    // available_bytes() = capacity - held (-1: unknown)

  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::string> loaded, unloaded;  // in order
  std::map<std::string, Model*> live;
  int64_t held = 0;
  bool gate_closed = false;
  int at_gate = 0;
  std::string fail_id;

  int64_t estimate_bytes(const ModelEntry& e) override {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = estimate.find(e.id);
    return it != estimate.end() ? it->second : bytes.at(e.id);
  }
  int64_t available_bytes() override {
    std::lock_guard<std::mutex> lock(mutex);
    return capacity < 0 ? -1 : capacity - held;
  }
  std::unique_ptr<LoadedModel> load(const ModelEntry& e) override {
    std::unique_lock<std::mutex> lock(mutex);
    ++at_gate;
    cv.notify_all();
    cv.wait(lock, [&] { return !gate_closed; });
    --at_gate;
    if (e.id == fail_id) fail("{}/config.json: not a model", e.id);
    auto m = std::make_unique<Model>(*this, e.id, bytes.at(e.id));
    loaded.push_back(e.id);
    held += m->bytes;
    live[e.id] = m.get();
    return m;
  }
  void open_gate() {
    std::lock_guard<std::mutex> lock(mutex);
    gate_closed = false;
    cv.notify_all();
  }
  std::vector<std::string> unloads() {
    std::lock_guard<std::mutex> lock(mutex);
    return unloaded;
  }
  std::vector<std::string> loads() {
    std::lock_guard<std::mutex> lock(mutex);
    return loaded;
  }
};

std::vector<ModelEntry> entries(std::initializer_list<ModelEntry> list) { return list; }

std::string state_of(const ModelRegistry& r, const std::string& id) {
  const json status = r.status();
  for (const auto& m : status["models"])
    if (m["id"] == id) return m["state"];
  return "?";
}

TEST(ModelRegistry, NamesIdsAliasesClaudeIdsAndFamilies) {
  ScriptedLoader loader;
  ModelRegistry r(entries({{.id = "alpha", .aliases = {"a", "gpt-4o-mini"}},
                           {.id = "Beta-Model/X"},
                           {.id = "claude-gamma"}}),
                  loader, {.haiku = "a"});
  std::vector<std::string> ids;
  for (const auto& l : r.listing()) ids.push_back(l.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"alpha", "a", "gpt-4o-mini", "claude-alpha", "Beta-Model/X",
                                           "claude-beta-model-x", "claude-gamma"}));
  const auto id_of = [&](const std::string& name) -> std::string {
    const ModelEntry* e = r.resolve(name);
    return e ? e->id : "(none)";
  };
  EXPECT_EQ(id_of("alpha"), "alpha");
  EXPECT_EQ(id_of("ALPHA"), "alpha");  // names are matched without case, as a last resort
  EXPECT_EQ(id_of("gpt-4o-mini"), "alpha");
  EXPECT_EQ(id_of("claude-beta-model-x"), "Beta-Model/X");
  EXPECT_EQ(id_of("Beta-Model/X"), "Beta-Model/X");
  EXPECT_EQ(id_of("claude-gamma"), "claude-gamma");
  EXPECT_EQ(id_of("claude-3-5-haiku-20241022"), "alpha");  // haiku = the alias "a"
  EXPECT_EQ(id_of("claude-sonnet-4-5"), "alpha");          // the default: the first entry
  EXPECT_EQ(id_of("Claude-Opus-4-1"), "alpha");
  EXPECT_EQ(id_of("claude"), "alpha");
  EXPECT_EQ(id_of("gpt-5"), "(none)");
  EXPECT_EQ(id_of(""), "(none)");
  EXPECT_EQ(id_of("anthropic-x"), "(none)");
  EXPECT_EQ(r.family_model("haiku").id, "alpha");

  // Another default: listed first, and it answers claude-* names of no other family.
  ModelRegistry g(entries({{.id = "alpha"}, {.id = "beta"}}), loader,
                  {.default_model = "beta", .opus = "alpha"});
  EXPECT_EQ(g.listing().front().id, "beta");
  EXPECT_EQ(g.resolve("claude-sonnet-4")->id, "beta");
  EXPECT_EQ(g.resolve("claude-opus-4")->id, "alpha");
  EXPECT_EQ(g.resolve("claude-haiku-4")->id, "beta");
  EXPECT_EQ(loader.loads().size(), 0u) << "naming loads nothing";
}

TEST(ModelRegistry, BadNamesAreRefusedNamingThem) {
  ScriptedLoader loader;
  const auto refusal = [&](std::vector<ModelEntry> list, RegistryOptions o = {}) {
    return pensieve::test::error_of([&] { ModelRegistry r(list, loader, o); });
  };
  EXPECT_NE(refusal({{.id = "a"}, {.id = "b", .aliases = {"A"}}}).find("'A' is given to two models: a and b"),
            std::string::npos);
  EXPECT_NE(refusal({{.id = "a", .aliases = {"x", "x"}}}).find("'x' is given twice"), std::string::npos);
  EXPECT_NE(refusal({{.id = "a"}}, {.haiku = "b"}).find("the haiku model 'b' names no served model (served: a)"),
            std::string::npos);
  EXPECT_NE(refusal({{.id = "a"}}, {.default_model = "z"}).find("the default model 'z'"), std::string::npos);
  EXPECT_NE(refusal({}).find("no model"), std::string::npos);
  EXPECT_NE(refusal({{.id = "a", .aliases = {""}}}).find("empty name"), std::string::npos);
}

TEST(ModelRegistry, LoadsOnFirstUseOnceForAllWhoWait) {
  ScriptedLoader loader;
  loader.bytes = {{"a", 10}, {"b", 10}};
  ModelRegistry r(entries({{.id = "a"}, {.id = "b"}}), loader);
  EXPECT_EQ(state_of(r, "a"), "unloaded");
  {
    std::lock_guard<std::mutex> lock(loader.mutex);
    loader.gate_closed = true;
  }
  std::shared_ptr<ModelLease> first, second;
  std::thread t1([&] { first = r.acquire(*r.resolve("a")); });
  ASSERT_TRUE(pensieve::test::wait_until([&] {
    std::lock_guard<std::mutex> lock(loader.mutex);
    return loader.at_gate == 1;
  }));
  EXPECT_EQ(state_of(r, "a"), "loading");
  EXPECT_FALSE(r.loaded_info(*r.resolve("a")));
  // A second request for it waits for that load instead of starting another.
  std::thread t2([&] { second = r.acquire(*r.resolve("a")); });
  loader.open_gate();
  t1.join();
  t2.join();
  ASSERT_TRUE(first && second);
  EXPECT_EQ(&first->backend, &second->backend);
  EXPECT_EQ(loader.loads(), std::vector<std::string>{"a"});
  EXPECT_EQ(first->info.id, "a");
  EXPECT_EQ(state_of(r, "a"), "loaded");
  EXPECT_EQ(r.status()["models"][0]["requests"], 2);
  first.reset();
  second.reset();
  EXPECT_EQ(r.status()["models"][0]["requests"], 0);
  EXPECT_EQ(r.memory_used(), 10);
}

TEST(ModelRegistry, UnloadsTheLeastRecentlyUsedIdleModelToStayWithinTheBudget) {
  ScriptedLoader loader;
  loader.bytes = {{"a", 60}, {"b", 60}, {"c", 30}};
  ModelRegistry r(entries({{.id = "a"}, {.id = "b"}, {.id = "c"}}), loader, {.memory_budget = 100});
  r.acquire(*r.resolve("a"));
  r.acquire(*r.resolve("b"));  // 120 > 100: a goes
  EXPECT_EQ(loader.unloads(), std::vector<std::string>{"a"});
  r.acquire(*r.resolve("c"));  // 90 fits
  EXPECT_EQ(loader.unloads(), std::vector<std::string>{"a"});
  EXPECT_EQ(r.memory_used(), 90);
  r.acquire(*r.resolve("c"));  // c used after b
  r.acquire(*r.resolve("a"));  // needs 60: b, the least recently used, goes
  EXPECT_EQ(loader.unloads(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(state_of(r, "c"), "loaded");
  EXPECT_EQ(state_of(r, "a"), "loaded");
  EXPECT_EQ(r.memory_used(), 90);
  EXPECT_EQ(r.status()["memory"]["budget_bytes"], 100);
}

TEST(ModelRegistry, ABusyModelStaysUntilItsRequestsEnd) {
  ScriptedLoader loader;
  loader.bytes = {{"a", 60}, {"b", 60}};
  ModelRegistry r(entries({{.id = "a"}, {.id = "b"}}), loader,
                  {.memory_budget = 100, .memory_wait = std::chrono::milliseconds(20)});
  auto held = r.acquire(*r.resolve("a"));
  try {
    r.acquire(*r.resolve("b"));
    ADD_FAILURE() << "b loaded while a was busy";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 529);
    EXPECT_NE(std::string(e.what()).find("busy"), std::string::npos) << e.what();
  }
  EXPECT_EQ(state_of(r, "b"), "unloaded");
  EXPECT_EQ(state_of(r, "a"), "loaded");
  EXPECT_TRUE(loader.unloads().empty());

  ModelRegistry patient(entries({{.id = "a"}, {.id = "b"}}), loader, {.memory_budget = 100});
  auto busy = patient.acquire(*patient.resolve("a"));
  std::shared_ptr<ModelLease> b;
  std::thread waiter([&] { b = patient.acquire(*patient.resolve("b")); });
  held.reset();
  busy.reset();  // a goes idle: b's load unloads it and goes on
  waiter.join();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->info.id, "b");
  EXPECT_EQ(state_of(patient, "a"), "unloaded");
}

TEST(ModelRegistry, AFailedLoadIsReportedAndTriedAgainNextTime) {
  ScriptedLoader loader;
  loader.bytes = {{"a", 1}, {"b", 1}};
  loader.fail_id = "b";
  ModelRegistry r(entries({{.id = "a"}, {.id = "b"}}), loader);
  EXPECT_NE(pensieve::test::error_of([&] { r.acquire(*r.resolve("b")); }).find("b/config.json: not a model"),
            std::string::npos);
  EXPECT_EQ(state_of(r, "b"), "unloaded");
  EXPECT_EQ(r.status()["models"][1]["last_error"], "b/config.json: not a model");
  EXPECT_EQ(r.memory_used(), 0);
  {
    std::lock_guard<std::mutex> lock(loader.mutex);
    loader.fail_id.clear();
  }
  EXPECT_EQ(r.acquire(*r.resolve("b"))->info.id, "b");
  EXPECT_FALSE(r.status()["models"][1].contains("last_error"));
}

TEST(ModelRegistry, AModelLargerThanTheBudgetLoadsAlone) {
  ScriptedLoader loader;
  loader.bytes = {{"small", 10}, {"big", 80}};
  ModelRegistry r(entries({{.id = "small"}, {.id = "big"}}), loader, {.memory_budget = 50});
  r.acquire(*r.resolve("small"));
  EXPECT_EQ(r.acquire(*r.resolve("big"))->info.id, "big");
  EXPECT_EQ(loader.unloads(), std::vector<std::string>{"small"});
  EXPECT_EQ(r.memory_used(), 80);
}

TEST(ModelRegistry, WhatALoadedModelHoldsBeyondItsEstimateUnloadsOthersToo) {
  ScriptedLoader loader;
  loader.bytes = {{"a", 60}, {"c", 50}};
  loader.estimate = {{"a", 30}};  // its KV pool was not in the estimate
  ModelRegistry r(entries({{.id = "c"}, {.id = "a"}}), loader, {.memory_budget = 100});
  r.acquire(*r.resolve("c"));
  r.acquire(*r.resolve("a"));  // 50 + 30 fit; then 50 + 60 do not: c goes
  EXPECT_EQ(loader.unloads(), std::vector<std::string>{"c"});
  EXPECT_EQ(r.memory_used(), 60);
}

TEST(ModelRegistry, WithoutABudgetTheMemoryAvailableDecides) {
  ScriptedLoader loader;
  loader.bytes = {{"a", 60}, {"b", 60}, {"c", 30}};
  loader.capacity = 100;
  ModelRegistry r(entries({{.id = "a"}, {.id = "b"}, {.id = "c"}}), loader);
  r.acquire(*r.resolve("a"));
  r.acquire(*r.resolve("c"));  // 30 of the 40 left
  EXPECT_TRUE(loader.unloads().empty());
  r.acquire(*r.resolve("b"));  // 60 > the 10 free: a (least recently used) goes, then 60 of 70 fit
  EXPECT_EQ(loader.unloads(), std::vector<std::string>{"a"});
  EXPECT_EQ(state_of(r, "c"), "loaded");
}

// --- The routes, in front of a registry of two scripted models.

class ModelsServerTest : public ::testing::Test {
 protected:
  ScriptedLoader loader;
  std::unique_ptr<ModelRegistry> registry;
  std::unique_ptr<Server> server;

  void SetUp() override {
    loader.bytes = {{"alpha", 10}, {"beta", 10}};
    registry = std::make_unique<ModelRegistry>(
        entries({{.id = "alpha", .aliases = {"gpt-4o-mini"}, .display_name = "Alpha One"},
                 {.id = "beta", .context_size_hint = 4096, .max_output_tokens = 7}}),
        loader, RegistryOptions{.haiku = "beta"});
    registry->load_at_start();
    ServerOptions o;
    o.port = 0;
    o.api_keys_from_env = false;
    server = std::make_unique<Server>(*registry, o);
    server->start();
    client().Get("/health");
  }
  void TearDown() override { server.reset(); }

  httplib::Client client() {
    httplib::Client c("127.0.0.1", server->port());
    c.set_read_timeout(20, 0);
    return c;
  }
  json get(const std::string& path, bool anthropic = true) {
    httplib::Headers h;
    if (anthropic) h.emplace("anthropic-version", "2023-06-01");
    auto res = client().Get(path, h);
    EXPECT_TRUE(res);
    if (!res) return nullptr;
    json body = json::parse(res->body);
    body["_status"] = res->status;
    return body;
  }
  json post(const std::string& path, const json& body) {
    auto res = client().Post(path, body.dump(), "application/json");
    EXPECT_TRUE(res);
    if (!res) return nullptr;
    json out = json::parse(res->body);
    out["_status"] = res->status;
    return out;
  }
  static json hello(const std::string& model) {
    return {{"model", model}, {"max_tokens", 20}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
  }
  static std::vector<std::string> ids(const json& page) {
    std::vector<std::string> out;
    for (const auto& m : page["data"]) out.push_back(m["id"]);
    return out;
  }
};

TEST_F(ModelsServerTest, ListsEveryNameWithAnthropicsPagination) {
  const std::vector<std::string> all = {"alpha", "gpt-4o-mini", "claude-alpha", "beta", "claude-beta"};
  json page = get("/v1/models");
  EXPECT_EQ(ids(page), all);
  EXPECT_EQ(page["first_id"], "alpha");
  EXPECT_EQ(page["last_id"], "claude-beta");
  EXPECT_EQ(page["has_more"], false);
  const json& alpha = page["data"][0];
  EXPECT_EQ(alpha["display_name"], "Alpha One");
  EXPECT_EQ(alpha["loaded"], true);
  EXPECT_EQ(alpha["context_size"], 100000);
  EXPECT_FALSE(alpha.contains("alias_of"));
  EXPECT_EQ(page["data"][1]["alias_of"], "alpha");
  EXPECT_EQ(page["data"][1]["display_name"], "Alpha One");
  const json& beta = page["data"][3];
  EXPECT_EQ(beta["loaded"], false);
  EXPECT_EQ(beta["context_size"], 4096);  // configured, before it is loaded
  EXPECT_EQ(beta["max_tokens"], 7);

  json first = get("/v1/models?limit=2");
  EXPECT_EQ(ids(first), (std::vector<std::string>{"alpha", "gpt-4o-mini"}));
  EXPECT_EQ(first["has_more"], true);
  EXPECT_EQ(first["last_id"], "gpt-4o-mini");
  json next = get("/v1/models?limit=2&after_id=gpt-4o-mini");
  EXPECT_EQ(ids(next), (std::vector<std::string>{"claude-alpha", "beta"}));
  EXPECT_EQ(next["has_more"], true);
  json last = get("/v1/models?limit=2&after_id=beta");
  EXPECT_EQ(ids(last), (std::vector<std::string>{"claude-beta"}));
  EXPECT_EQ(last["has_more"], false);
  json before = get("/v1/models?limit=2&before_id=beta");
  EXPECT_EQ(ids(before), (std::vector<std::string>{"gpt-4o-mini", "claude-alpha"}));
  EXPECT_EQ(before["has_more"], true);
  json start = get("/v1/models?before_id=gpt-4o-mini");
  EXPECT_EQ(ids(start), (std::vector<std::string>{"alpha"}));
  EXPECT_EQ(start["has_more"], false);
  json empty = get("/v1/models?after_id=claude-beta");
  EXPECT_TRUE(empty["data"].empty());
  EXPECT_TRUE(empty["first_id"].is_null());

  // Without anthropic-version (OpenAI's SDK) the whole list comes at once.
  EXPECT_EQ(ids(get("/v1/models?", false)), all);
  EXPECT_EQ(ids(get("/v1/models?limit=1", false)).size(), 1u);

  for (const std::string bad : {"limit=0", "limit=1001", "limit=x", "limit=", "after_id=nothing",
                                "before_id=nothing", "after_id=alpha&before_id=beta"}) {
    json e = get("/v1/models?" + bad);
    EXPECT_EQ(e["_status"], 400) << bad;
    EXPECT_EQ(e["error"]["type"], "invalid_request_error") << bad;
  }
}

TEST_F(ModelsServerTest, RetrievesNamesAndAnswers404ForOthers) {
  json alias = get("/v1/models/gpt-4o-mini");
  EXPECT_EQ(alias["id"], "gpt-4o-mini");
  EXPECT_EQ(alias["alias_of"], "alpha");
  json haiku = get("/v1/models/claude-3-5-haiku-latest");
  EXPECT_EQ(haiku["alias_of"], "beta");
  json none = get("/v1/models/gpt-5");
  EXPECT_EQ(none["_status"], 404);
  EXPECT_EQ(none["type"], "error");
  EXPECT_EQ(none["error"]["type"], "not_found_error");
  EXPECT_EQ(none["error"]["message"].get<std::string>().rfind("model: gpt-5 (this server serves alpha, beta", 0), 0u)
      << none;
}

TEST_F(ModelsServerTest, ARequestIsAnsweredByTheModelItNames) {
  json a = post("/v1/messages", hello("gpt-4o-mini"));
  EXPECT_EQ(a["_status"], 200) << a;
  EXPECT_EQ(a["model"], "alpha");
  EXPECT_EQ(state_of(*registry, "beta"), "unloaded");
  // Claude Code's background requests name a Haiku: the haiku model, loaded now.
  json h = post("/v1/messages", hello("claude-3-5-haiku-20241022"));
  EXPECT_EQ(h["_status"], 200) << h;
  EXPECT_EQ(h["model"], "beta");
  EXPECT_EQ(state_of(*registry, "beta"), "loaded");
  ASSERT_EQ(loader.live.count("beta"), 1u);
  EXPECT_EQ(loader.live["beta"]->scripted().n_submitted, 1);
  EXPECT_EQ(loader.live["alpha"]->scripted().n_submitted, 1);
  // beta's own cap (max_output_tokens 7) bounds its answers.
  EXPECT_EQ(loader.live["beta"]->scripted().last_request().max_tokens, 7);
  json s = post("/v1/messages", hello("claude-sonnet-4-5"));
  EXPECT_EQ(s["model"], "alpha");

  json none = post("/v1/messages", hello("llama-9"));
  EXPECT_EQ(none["_status"], 404);
  EXPECT_EQ(none["error"]["type"], "not_found_error");
  EXPECT_EQ(none["error"]["message"].get<std::string>().rfind("model: llama-9", 0), 0u);
  json count = post("/v1/messages/count_tokens", hello("llama-9"));
  EXPECT_EQ(count["_status"], 404);
  EXPECT_EQ(post("/v1/messages/count_tokens", hello("beta"))["input_tokens"].is_number(), true);
  // OpenAI's face answers in its shape, with its code.
  json chat = post("/v1/chat/completions", hello("llama-9"));
  EXPECT_EQ(chat["_status"], 404);
  EXPECT_EQ(chat["error"]["code"], "model_not_found");
  json ok = post("/v1/chat/completions", hello("gpt-4o-mini"));
  EXPECT_EQ(ok["_status"], 200) << ok;
  EXPECT_EQ(ok["model"], "alpha");
  // A body that is wrong otherwise is a 400 naming the field.
  json bad = post("/v1/messages", {{"model", "beta"}, {"max_tokens", "x"}});
  EXPECT_EQ(bad["_status"], 400);
}

TEST_F(ModelsServerTest, HealthAndMetricsReportEachModel) {
  EXPECT_EQ(post("/v1/messages", hello("beta"))["_status"], 200);
  json h = get("/health");
  EXPECT_EQ(h["model"], "alpha");
  EXPECT_EQ(h["default_model"], "alpha");
  EXPECT_EQ(h["claude_families"]["haiku"], "beta");
  EXPECT_EQ(h["claude_families"]["opus"], "alpha");
  ASSERT_EQ(h["models"].size(), 2u);
  EXPECT_EQ(h["models"][1]["id"], "beta");
  EXPECT_EQ(h["models"][1]["state"], "loaded");
  EXPECT_EQ(h["models"][1]["memory_bytes"], 10);
  EXPECT_EQ(h["model_memory"]["used_bytes"], 20);
  auto res = client().Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("pensieve_generations_total{model=\"beta\"} 1\n"), std::string::npos) << res->body;
  EXPECT_NE(res->body.find("pensieve_generations_total{model=\"alpha\"} 0\n"), std::string::npos);
  EXPECT_NE(res->body.find("pensieve_model_loaded{model=\"beta\"} 1\n"), std::string::npos);
  EXPECT_NE(res->body.find("pensieve_model_loaded{model=\"alpha\"} 1\n"), std::string::npos);
}

}  // namespace
}  // namespace pensieve::server
