// How both of our HTTP servers (the loading stand-in and the real one) set up
// their listening socket on top of cpp-httplib.
#pragma once

#include <httplib.h>

#include <atomic>

namespace pensieve::server {

// httplib's defaults do not suit a server: SO_REUSEPORT lets a second process
// bind the same port and silently take half the connections, and the Debian
// build listens with a backlog of 5, so a burst of connects (several Claude
// Code sessions starting at once, a load test) overflows it and the kernel
// drops SYNs that clients retry only after 1, 3, 7... s.
//
// Usage: install(http) before bind_to_port, raise_backlog() right after it.
class ListenSocket {
 public:
  // Sets SO_REUSEADDR (rebinding over TIME_WAIT only) instead of httplib's
  // SO_REUSEPORT, and records the listening socket's fd.
  void install(httplib::Server& http);
  // Listens again with the system's maximum backlog (on Linux this only
  // updates the backlog of the listening socket). Returns false, with a
  // warning logged, where that failed; the server still works.
  bool raise_backlog();

 private:
  std::atomic<int> fd_{-1};
  std::atomic<bool> fixed_{false};
};

}  // namespace pensieve::server
