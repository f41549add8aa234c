// GGUF models other local servers already keep, used in place (read-only):
//  - Ollama's store: $OLLAMA_MODELS, else ~/.ollama/models, else the Linux
//    service's /usr/share/ollama/.ollama/models. manifests/HOST/NS/MODEL/TAG
//    name a blob (blobs/sha256-HEX) whose layer is
//    application/vnd.ollama.image.model: a GGUF file.
//  - LM Studio's models folder: ~/.lmstudio/models, else the older
//    ~/.cache/lm-studio/models: PUBLISHER/REPO/FILE.gguf.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pensieve {

struct LocalGguf {
  std::string source;  // "ollama" or "lmstudio"
  std::string name;    // what --model takes: "ollama:llama3.2:latest", or the file's path
  std::string path;    // the GGUF file
  uint64_t bytes = 0;
};

std::string ollama_models_dir();  // the first that exists, else the default ("" if no HOME)
std::vector<LocalGguf> list_ollama_models();
std::vector<LocalGguf> list_lmstudio_models();

// "ollama:NAME[:TAG]" (NAME: MODEL, NS/MODEL or HOST/NS/MODEL; TAG defaults
// to "latest") to the GGUF blob it names. Throws not_found naming the store
// and what it holds when there is no such model.
std::string resolve_ollama_ref(const std::string& ref);

}  // namespace pensieve
