// The connection gate's look at a request's first bytes (server/http_server.h):
// when the headers end, the Content-Length, whether the body has arrived.
#include <gtest/gtest.h>

#include "server/http_server.h"

namespace pensieve::server {
namespace {

TEST(PeekRequest, HeadersIncompleteUntilTheEmptyLine) {
  EXPECT_EQ(peek_request("").headers_end, 0u);
  EXPECT_EQ(peek_request("GET / HTTP/1.1\r\nHost: x\r\n").headers_end, 0u);
  EXPECT_EQ(peek_request("GET / HTTP/1.1\r\nHost: x\n\n").headers_end, 0u);  // httplib wants CRLF too
  const std::string get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  PeekedRequest p = peek_request(get);
  EXPECT_EQ(p.headers_end, get.size());
  EXPECT_FALSE(p.has_content_length);
  EXPECT_TRUE(p.body_complete);
}

TEST(PeekRequest, ContentLengthAnySpellingAndTheBody) {
  const std::string head = "POST /v1/messages HTTP/1.1\r\ncOnTeNt-LeNgTh:  5 \r\n\r\n";
  PeekedRequest p = peek_request(head + "ab");
  EXPECT_EQ(p.headers_end, head.size());
  ASSERT_TRUE(p.has_content_length);
  EXPECT_EQ(p.content_length, 5u);
  EXPECT_FALSE(p.body_complete);
  EXPECT_TRUE(peek_request(head + "abcde").body_complete);
  EXPECT_EQ(peek_request("POST / HTTP/1.1\r\nContent-Length: 2147483648\r\n\r\n").content_length,
            2147483648ull);
  // Too many digits for 64 bits: as large as it gets (the gate answers 413).
  PeekedRequest huge = peek_request("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
  EXPECT_TRUE(huge.has_content_length);
  EXPECT_EQ(huge.content_length, ~0ull);
}

TEST(PeekRequest, MalformedLengthsAreLeftToHttplib) {
  for (const char* value : {"", "abc", "-1", "1 2", "0x10"}) {
    PeekedRequest p = peek_request(std::string("POST / HTTP/1.1\r\nContent-Length: ") + value + "\r\n\r\n");
    EXPECT_FALSE(p.has_content_length) << value;
    EXPECT_TRUE(p.body_complete) << value;  // dispatched at once: httplib answers 400
  }
}

TEST(PeekRequest, ChunkedBodyEndsWithTheLastChunk) {
  const std::string head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  EXPECT_TRUE(peek_request(head).chunked);
  EXPECT_FALSE(peek_request(head + "3\r\nabc\r\n").body_complete);
  EXPECT_TRUE(peek_request(head + "3\r\nabc\r\n0\r\n\r\n").body_complete);
  EXPECT_TRUE(peek_request(head + "0\r\n\r\n").body_complete);
}

TEST(PeekRequest, ExpectContinueIsDispatchedAtOnce) {
  PeekedRequest p = peek_request("POST / HTTP/1.1\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n");
  EXPECT_TRUE(p.expect_continue);
  EXPECT_TRUE(p.body_complete);  // the client waits for httplib's 100 before its body
}

}  // namespace
}  // namespace pensieve::server
