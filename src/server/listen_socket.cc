#include "server/listen_socket.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"

namespace pensieve::server {

void ListenSocket::install(httplib::Server& http, int receive_buffer) {
  fd_ = -1;
  fixed_ = false;
  // httplib calls the hook on each listening socket it tries (one per
  // resolved address) before bind; the last one tried is the one bound.
  http.set_socket_options([this, receive_buffer](int fd) {
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (receive_buffer > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    if (!fixed_) fd_ = fd;
  });
}

bool ListenSocket::raise_backlog() {
  fixed_ = true;
  const int fd = fd_;
  if (fd < 0) {
    spdlog::warn("could not raise the listen backlog: the listening socket is unknown");
    return false;
  }
  if (::listen(fd, SOMAXCONN) != 0) {
    spdlog::warn("could not raise the listen backlog: {}", std::strerror(errno));
    return false;
  }
  return true;
}

}  // namespace pensieve::server
