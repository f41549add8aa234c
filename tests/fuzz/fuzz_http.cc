// The HTTP layer: raw bytes of one client connection (request lines,
// headers, Content-Length and chunked bodies, several keep-alive requests)
// through the server's routes, as a socket's bytes go (Server::serve_stream),
// with a backend that answers at once. Also the connection gate's look at
// the headers (peek_request).
// cpp-httplib's parser is Debian's shared library, built without coverage:
// libFuzzer steers by the routes' and the gate's coverage only, but every
// crash or sanitizer report inside the library still stops the run.
// Contract: no crash, and every answer is a well-formed HTTP status line
// that is never a 5xx.
#include <httplib.h>

#include <cctype>
#include <cstdlib>
#include <cstring>

#include "fuzz_support.h"
#include "server/http_server.h"
#include "server/server.h"

using namespace pensieve;
using namespace pensieve::server;

namespace {

// Emits a short answer synchronously.
class InstantBackend : public Backend {
 public:
  // "m": the name the seeds' requests use (any other is a 404 now).
  ModelInfo info() const override { return {"m", "Fuzz", 4096, false, true, true, ""}; }
  std::vector<int32_t> tokenize(const std::string& text) const override {
    return std::vector<int32_t>(std::min<size_t>(text.size(), 100), 1);
  }
  std::string render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json* tools,
                     const nlohmann::ordered_json& extra_vars) const override {
    return messages.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  }
  std::shared_ptr<Generation> submit(GenerationRequest request, EventCallback on_event) override {
    GenerationEvent e;
    e.kind = GenerationEvent::Kind::progress;
    on_event(e);
    e.kind = GenerationEvent::Kind::token;
    e.token = 1;
    e.text = "Hi <tool_call>\n{\"name\": \"t\", \"arguments\": {}}\n</tool_call>";
    on_event(e);
    e.kind = GenerationEvent::Kind::done;
    e.finish = FinishReason::eos;
    on_event(e);
    return std::make_shared<Nothing>();
  }

 private:
  struct Nothing : Generation {
    void cancel() override {}
  };
};

class MemoryStream : public httplib::Stream {
 public:
  MemoryStream(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool is_readable() const override { return pos_ < size_; }
  bool is_writable() const override { return true; }
  ssize_t read(char* ptr, size_t size) override {
    const size_t n = std::min(size, size_ - pos_);
    std::memcpy(ptr, data_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    out_.append(ptr, size);
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 40000;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 8080;
  }
  socket_t socket() const override { return -1; }
  const std::string& out() const { return out_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string out_;
};

Server& the_server() {
  static InstantBackend backend;
  static Server* s = [] {
    ServerOptions options;
    options.max_body_bytes = 1 << 20;
    options.max_header_bytes = 16 << 10;
    options.max_per_client = 0;
    return new Server(backend, options);
  }();
  return *s;
}

}  // namespace

// The model files load once, before the first input is timed.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)the_server();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const PeekedRequest peeked = peek_request({reinterpret_cast<const char*>(data), size});
  if (peeked.headers_end > size) fuzz::contract_broken("peek_request", "headers end past the input");
  MemoryStream strm(data, size);
  the_server().serve_stream(strm);
  // The responses written, one after the other: a status line, headers,
  // then a body of Content-Length bytes or chunks (a HEAD answer or one
  // that ends the connection has neither: checking stops there). An error
  // message may quote the request's bytes, "HTTP/1.1 5" among them, so
  // status lines are looked for only where a response starts.
  const std::string& out = strm.out();
  size_t at = 0;
  while (at + 12 <= out.size() && out.compare(at, 9, "HTTP/1.1 ") == 0) {
    const int status = std::atoi(out.substr(at + 9, 3).c_str());
    if (status >= 500 && status != 529 && status != 503)
      fuzz::contract_broken("http", "a 5xx answer: " + out.substr(at, 300));
    const size_t end = out.find("\r\n\r\n", at);
    if (end == std::string::npos) break;
    std::string head = out.substr(at, end - at);
    for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    at = end + 4;
    if (status < 200) continue;  // 100 Continue: the answer follows
    if (head.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
      for (;;) {
        const size_t line_end = out.find("\r\n", at);
        if (line_end == std::string::npos) return 0;
        const size_t n = std::strtoul(out.substr(at, line_end - at).c_str(), nullptr, 16);
        at = line_end + 2 + n + 2;
        if (n == 0) break;
      }
    } else if (const size_t cl = head.find("\r\ncontent-length: "); cl != std::string::npos) {
      at += std::strtoul(head.c_str() + cl + 18, nullptr, 10);
    } else {
      break;
    }
  }
  return 0;
}
