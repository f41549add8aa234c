// The connection gate's look at a request's first bytes (server/http_server.h):
// when the headers end, the Content-Length, whether the body has arrived,
// and how it follows a chunked body's framing.
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
  EXPECT_FALSE(peek_request(head + "3\r\nabc\r\n0\r\n").body_complete);
  // Chunk data that looks like the last chunk is only data.
  EXPECT_FALSE(peek_request(head + "A\r\nx\r\n0\r\n\r\nyy").body_complete);
  EXPECT_TRUE(peek_request(head + "A\r\nx\r\n0\r\n\r\nyyy\r\n0\r\n\r\n").body_complete);
}

TEST(ScanChunks, GoesOnFromWhereItStopped) {
  const std::string head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string body = "5;ext=1\r\nhello\r\n1F\r\n" + std::string(31, 'x') + "\r\n0\r\n\r\n";
  const std::string all = head + body;
  ChunkScan scan{ChunkScan::incomplete, head.size(), head.size() + 1};
  size_t n_scans = 0;
  // Byte by byte, scanning only where the last scan said it can get further.
  for (size_t n = head.size(); n <= all.size(); ++n) {
    if (n < scan.need) continue;
    ++n_scans;
    scan = scan_chunks(std::string_view(all).substr(0, n), scan.at);
    if (n < all.size()) {
      ASSERT_EQ(scan.state, ChunkScan::incomplete) << n;
      EXPECT_GT(scan.need, n);
    }
  }
  EXPECT_EQ(scan.state, ChunkScan::complete);
  // The 31 bytes of the second chunk were waited for, not scanned byte by byte.
  EXPECT_LT(n_scans, body.size() - 30);
}

TEST(ScanChunks, MalformedFramingIsLeftToHttplib) {
  const std::string head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const std::string body : {"zz\r\n", "\r\n", "3\r\nabcXY", "0\r\nTrailer: x\r\n\r\n",
                                 "-3\r\nabc\r\n", "3x\r\nabc\r\n", "FFFFFFFFFFFFFFFFFF\r\n"}) {
    EXPECT_EQ(scan_chunks(head + body, head.size()).state, ChunkScan::malformed) << body;
    EXPECT_TRUE(peek_request(head + body).body_complete) << body;  // a worker answers it at once
  }
  EXPECT_EQ(scan_chunks(head + std::string(5000, '1'), head.size()).state, ChunkScan::malformed);
  EXPECT_EQ(scan_chunks(head + std::string(100, '1'), head.size()).state, ChunkScan::incomplete);
}

TEST(PeekRequest, ExpectContinueWaitsForTheBody) {
  const std::string head = "POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
  PeekedRequest p = peek_request(head);
  EXPECT_TRUE(p.expect_continue);
  EXPECT_FALSE(p.body_complete);  // the gate sends the 100 and waits
  EXPECT_TRUE(peek_request(head + "abcde").body_complete);
  EXPECT_TRUE(peek_request("POST / HTTP/1.1\r\nexpect:  100-Continue \r\n\r\n").expect_continue);
  PeekedRequest other = peek_request("POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: fries\r\n\r\n");
  EXPECT_FALSE(other.expect_continue);
  EXPECT_FALSE(other.body_complete);
}

}  // namespace
}  // namespace pensieve::server
