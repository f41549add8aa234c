// What serve takes from systemd: a listening socket it passes (socket
// activation: LISTEN_FDS / LISTEN_PID, packaging/systemd/pensieve.socket)
// and the readiness it is told (Type=notify: READY=1 once the model is
// loaded and requests are answered). Without systemd both do nothing.
#pragma once

#include <string>

namespace pensieve::server {

// The listening socket systemd passed this process, or -1 when it passed
// none. Throws Error when it passed several, or one that is not a listening
// TCP socket. The LISTEN_* variables are removed (children such as a
// shell tool must not take the socket for theirs).
int inherited_listen_socket();

// The address a TCP socket is bound to, as text ("127.0.0.1", "::1"), and its port.
struct SocketAddress {
  std::string host;
  int port = 0;
};
SocketAddress local_address(int fd);

// sd_notify: READY=1 with a status line; STOPPING=1.
void notify_ready(const std::string& status);
void notify_stopping();

}  // namespace pensieve::server
