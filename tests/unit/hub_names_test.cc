// Repo ids, revisions, file names and etags: what may become part of a URL or
// a cache path.
#include <gtest/gtest.h>

#include "core/error.h"
#include "hub/hub_client.h"
#include "hub/repo_id.h"

namespace pensieve::hub {
namespace {

TEST(HubNames, RepoIds) {
  for (const char* good : {"mlx-community/Phi-3-mini-128k-instruct-4bit", "Qwen/Qwen2.5-0.5B",
                           "meta-llama/Llama-3.2-1B-Instruct", "a/b", "org_1/name.v2"}) {
    EXPECT_TRUE(is_valid_repo_id(good)) << good;
  }
  for (const char* bad : {"", "name", "/name", "org/", "org/name/extra", "org/../etc", "../x",
                          "org/na--me", "org--x/name", "-org/name", "org/name-", "org/.hidden",
                          "org/name.git", "org/na me", "org/na%2fme", "org\\name", "org/näme",
                          "/etc/passwd"}) {
    EXPECT_FALSE(is_valid_repo_id(bad)) << bad;
    EXPECT_THROW(validate_repo_id(bad), Error) << bad;
  }
  EXPECT_FALSE(is_valid_repo_id("org/" + std::string(100, 'a')));
}

TEST(HubNames, RepoRefs) {
  auto ref = parse_repo_ref("Qwen/Qwen2.5-0.5B");
  EXPECT_EQ(ref.repo, "Qwen/Qwen2.5-0.5B");
  EXPECT_EQ(ref.revision, "main");
  ref = parse_repo_ref("org/name@refs/pr/1");
  EXPECT_EQ(ref.revision, "refs/pr/1");
  ref = parse_repo_ref("org/name@0123456789abcdef0123456789abcdef01234567");
  EXPECT_TRUE(is_commit_hash(ref.revision));
  for (const char* bad : {"org/name@", "org/name@../x", "org/name@a//b", "org/name@/abs",
                          "org/name@.hidden", "org/name@a\nb", "org/../x@main"}) {
    EXPECT_THROW(parse_repo_ref(bad), Error) << bad;
  }
  try {
    parse_repo_ref("just-a-name");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected ORG/NAME"), std::string::npos) << e.what();
  }
}

TEST(HubNames, FileNamesFromTheServer) {
  EXPECT_NO_THROW(validate_repo_file_name("o/n", "config.json"));
  EXPECT_NO_THROW(validate_repo_file_name("o/n", "onnx/model.onnx"));
  for (const char* bad : {"../x", "/etc/passwd", "a/../../b", "..", ".", "a//b", "a/", "a\\b",
                          "a/./b", ""}) {
    EXPECT_THROW(validate_repo_file_name("o/n", bad), Error) << bad;
  }
  EXPECT_NO_THROW(validate_etag(std::string(64, 'a'), "f"));
  for (const char* bad : {"", ".", "..", "../x", "a/b", "a b"}) {
    EXPECT_THROW(validate_etag(bad, "f"), Error) << bad;
  }
}

TEST(HubNames, OnlyModelFilesAreWanted) {
  for (const char* want : {"config.json", "generation_config.json", "tokenizer.json",
                           "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                           "chat_template.jinja", "chat_template.json", "model.safetensors",
                           "model-00001-of-00002.safetensors", "model.safetensors.index.json"}) {
    EXPECT_TRUE(is_model_file(want)) << want;
  }
  for (const char* skip : {"pytorch_model.bin", "model.pt", "model.gguf", "model.onnx",
                           "README.md", "logo.png", "original/consolidated.safetensors",
                           "onnx/config.json", ".safetensors", "training_args.bin",
                           "pytorch_model.bin.index.json"}) {
    EXPECT_FALSE(is_model_file(skip)) << skip;
  }
}

TEST(HubNames, CacheFolderNames) {
  EXPECT_EQ(repo_folder_name("mlx-community/Phi-3"), "models--mlx-community--Phi-3");
  EXPECT_EQ(repo_from_folder_name("models--mlx-community--Phi-3"), "mlx-community/Phi-3");
  EXPECT_EQ(repo_from_folder_name("datasets--a--b"), "");
  EXPECT_EQ(repo_from_folder_name("models--nosep"), "");
  EXPECT_EQ(repo_from_folder_name(".locks"), "");
}

TEST(HubNames, UrlEscaping) {
  EXPECT_EQ(url_escape("refs/pr/1", false), "refs%2Fpr%2F1");
  EXPECT_EQ(url_escape("dir/a b.json", true), "dir/a%20b.json");
  EXPECT_EQ(url_escape("v1.0-rc_2~x", false), "v1.0-rc_2~x");
}

TEST(HubNames, SizeAndEtagHeaders) {
  EXPECT_EQ(parse_size_header("0", "f"), 0u);
  EXPECT_EQ(parse_size_header("1479624", "f"), 1479624u);
  for (const char* bad : {"", "-1", "1e9", " 12", "12abc", "0x10", "99999999999999999999",
                          "1125899906842625"}) {
    EXPECT_THROW(parse_size_header(bad, "f"), Error) << bad;
  }
  EXPECT_EQ(normalize_etag("\"abc\""), "abc");
  EXPECT_EQ(normalize_etag("W/\"abc\""), "abc");
  EXPECT_EQ(normalize_etag("abc"), "abc");
}

}  // namespace
}  // namespace pensieve::hub
