#include "server/systemd.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include <cstring>

#include "core/error.h"

namespace pensieve::server {

int inherited_listen_socket() {
  const int n = sd_listen_fds(/*unset_environment=*/1);
  if (n < 0) fail(ErrorKind::invalid_input, "the sockets systemd passed (LISTEN_FDS): {}", std::strerror(-n));
  if (n == 0) return -1;
  if (n > 1)
    fail(ErrorKind::invalid_input,
         "systemd passed {} sockets (LISTEN_FDS={}); pensieve serve listens on one: give its .socket unit one "
         "ListenStream=",
         n, n);
  const int fd = SD_LISTEN_FDS_START;
  if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, /*listening=*/1, /*port=*/0) <= 0)
    fail(ErrorKind::invalid_input,
         "the socket systemd passed (fd {}) is not a listening TCP socket: give the .socket unit "
         "ListenStream=ADDRESS:PORT (e.g. 127.0.0.1:8080)",
         fd);
  return fd;
}

SocketAddress local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  SocketAddress out;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return out;
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    out.host = text;
    out.port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    out.host = text;
    out.port = ntohs(a->sin6_port);
  }
  return out;
}

void notify_ready(const std::string& status) {
  sd_notifyf(/*unset_environment=*/0, "READY=1\nSTATUS=%s", status.c_str());
}

void notify_stopping() { sd_notify(0, "STOPPING=1"); }

}  // namespace pensieve::server
