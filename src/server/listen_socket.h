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
  // SO_REUSEPORT, and records the listening socket's fd. receive_buffer:
  // SO_RCVBUF for the connections it accepts (they inherit it), when not 0.
  // Set on the listening socket, it is in place before a connection starts,
  // so the kernel sizes the connection's window limit to it (set only
  // after accept, the window limit stays that of the default buffer).
  void install(httplib::Server& http, int receive_buffer = 0);
  // Listens again with the system's maximum backlog (on Linux this only
  // updates the backlog of the listening socket). Returns false, with a
  // warning logged, where that failed; the server still works.
  bool raise_backlog();

 private:
  std::atomic<int> fd_{-1};
  std::atomic<bool> fixed_{false};
};

}  // namespace pensieve::server
