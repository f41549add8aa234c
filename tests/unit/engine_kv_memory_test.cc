// Sizing the KV pool: the automatic size from available (not total)
// memory, an explicit --kv-memory taken as given or refused with a reason,
// and parsing of the sizes --kv-memory accepts.
#include <cstring>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <functional>
#include <string>

#include "core/error.h"
#include "support/test_support.h"
#include "engine/engine.h"
#include "kernels/cpu/attention.h"
#include "backend/backend.h"
#include "backend/kv_storage.h"
#include "models/model.h"

namespace pensieve {
namespace {

constexpr int64_t B = kKvBlockTokens;
constexpr int64_t MiB = int64_t{1} << 20, GiB = int64_t{1} << 30;

using test::error_of;

TEST(KvMemory, ParsesMeminfo) {
  const char* text =
      "MemTotal:       24576000 kB\n"
      "MemFree:         1000000 kB\n"
      "MemAvailable:   12288000 kB\n"
      "Buffers:          100000 kB\n";
  const MemoryInfo m = parse_meminfo(text);
  EXPECT_EQ(m.total, int64_t{24576000} * 1024);
  EXPECT_EQ(m.available, int64_t{12288000} * 1024);
  // A kernel without MemAvailable: unknown, not MemFree.
  EXPECT_EQ(parse_meminfo("MemTotal: 100 kB\nMemFree: 50 kB\n").available, 0);
  EXPECT_EQ(parse_meminfo("").total, 0);
  // This machine's own answer is sane.
  const MemoryInfo here = read_memory_info();
  EXPECT_GT(here.total, 0);
  EXPECT_GT(here.available, 0);
  EXPECT_LE(here.available, here.total);
}

TEST(KvMemory, AutomaticPoolTakesAShareOfAvailableMemory) {
  EngineOptions o;
  o.ctx_size = 4096;  // 256 blocks a context
  o.max_running = 8;  // wants 2048 blocks
  const int64_t per_block = MiB;
  // Plenty available: every sequence gets a full context.
  EXPECT_EQ(kv_pool_blocks(o, per_block, {.total = 64 * GiB, .available = 32 * GiB}), 2048);
  // Lots of RAM but little of it available: the share of what is available
  // (half of 1 GiB = 512 one-MiB blocks), however large the total is.
  EXPECT_EQ(kv_pool_blocks(o, per_block, {.total = 64 * GiB, .available = GiB}),
            static_cast<int64_t>(GiB * kKvShareOfAvailableMemory) / per_block);
  EXPECT_EQ(kKvShareOfAvailableMemory, 0.5);
  // Unknown memory: the full want.
  EXPECT_EQ(kv_pool_blocks(o, per_block, {}), 2048);
  // Fewer sequences than the share holds: one full context each, and at
  // least one full context (4096 tokens + the first generated one).
  o.max_running = 1;
  EXPECT_EQ(kv_pool_blocks(o, per_block, {.total = 64 * GiB, .available = 32 * GiB}), 257);
}

// The automatic pool never takes more than its share, however long the
// context: Phi-3-mini's 131072 positions (384 KiB of K/V a token, 48 GiB a
// context) on a machine with 23.5 GiB once reserved all 48 GiB.
TEST(KvMemory, AutomaticPoolKeepsToItsShareEvenForOneLongContext) {
  EngineOptions o;
  o.ctx_size = 131072;
  o.max_running = 4;
  const int64_t per_block = 6 * MiB;  // 16 tokens x 384 KiB
  const MemoryInfo machine{.total = 47 * GiB / 2, .available = 22 * GiB};
  // The context is the user's (--ctx-size): refused, saying what fits.
  EXPECT_EQ(error_of([&] { plan_kv_pool(o, per_block, machine); }),
            "a 131072-token context needs 48.01 GiB of KV cache, but the automatic KV cache takes "
            "at most 11.00 GiB (half of the 22.00 GiB available): give a shorter context "
            "(--ctx-size 30016 fits) or the KV cache more memory (--kv-memory)");
  // The context is the model's default: it is shrunk to what the share holds.
  o.fit_ctx_size = true;
  const KvPoolPlan plan = plan_kv_pool(o, per_block, machine);
  EXPECT_EQ(plan.blocks, 11 * GiB / per_block);
  EXPECT_LE(plan.blocks * per_block, machine.available / 2);
  EXPECT_EQ(plan.ctx_size, (plan.blocks - 1) * B);
  EXPECT_EQ(plan.ctx_size, 30016);
  EXPECT_EQ(plan.note,
            "context shrunk from 131072 to 30016 tokens to fit the KV cache: a full context needs "
            "48.01 GiB, and the automatic KV cache takes at most 11.00 GiB (half of the 22.00 GiB "
            "available) (--kv-memory or --ctx-size choose otherwise)");
  // A context that fits is left alone.
  o.ctx_size = 4096;
  EXPECT_EQ(plan_kv_pool(o, per_block, machine).ctx_size, 4096);
  EXPECT_EQ(plan_kv_pool(o, per_block, machine).note, "");
  // An explicit budget too small for the default context shrinks it too.
  o.ctx_size = 131072;
  o.kv_memory_bytes = 3 * GiB;
  const KvPoolPlan explicit_plan = plan_kv_pool(o, per_block, machine);
  EXPECT_EQ(explicit_plan.blocks, 512);
  EXPECT_EQ(explicit_plan.ctx_size, 511 * B);
  EXPECT_NE(explicit_plan.note.find("--kv-memory gives 3.00 GiB"), std::string::npos)
      << explicit_plan.note;
  // Too little for even a short context: an error, not a useless server.
  o.kv_memory_bytes = 0;
  EXPECT_NE(error_of([&] { plan_kv_pool(o, per_block, {.total = GiB, .available = 40 * MiB}); })
                .find("a context of at least 256 tokens is needed"),
            std::string::npos);
}

TEST(KvMemory, ExplicitBudgetIsTakenAsGivenOrRefusedWithAReason) {
  EngineOptions o;
  o.ctx_size = 4096;
  o.max_running = 8;
  const MemoryInfo machine{.total = 16 * GiB, .available = GiB};
  // More than the automatic share of available memory is the user's call.
  o.kv_memory_bytes = 3 * GiB;
  EXPECT_EQ(kv_pool_blocks(o, MiB, machine), 3072);
  // Less than one context: an error that says what to change.
  o.kv_memory_bytes = 100 * MiB;
  ASSERT_EQ(B, 16);
  EXPECT_EQ(error_of([&] { kv_pool_blocks(o, MiB, machine); }),
            "KV memory of 100.0 MiB holds 100 blocks of 16 tokens, but one 4096-token context "
            "needs 257 (257.0 MiB): give it more memory (--kv-memory) or a shorter context "
            "(--ctx-size)");
  o.ctx_size = 1024;
  EXPECT_EQ(kv_pool_blocks(o, MiB, machine), 100);
  // More than the machine has.
  o.kv_memory_bytes = 20 * GiB;
  EXPECT_EQ(error_of([&] { kv_pool_blocks(o, MiB, machine); }),
            "KV memory of 20.00 GiB is more than this machine's 16.00 GiB of RAM");
  // On a GPU the messages name its budget option and memory.
  o.kv_memory_option = "--gpu-memory";
  o.memory_name = "GPU memory";
  EXPECT_EQ(error_of([&] { kv_pool_blocks(o, MiB, machine); }),
            "KV memory of 20.00 GiB is more than this machine's 16.00 GiB of GPU memory");
  o.kv_memory_bytes = 10 * MiB;
  EXPECT_NE(error_of([&] { kv_pool_blocks(o, MiB, machine); }).find("give it more memory (--gpu-memory)"),
            std::string::npos);
}

// A GPU that cannot hold the weights, the shortest context's KV cache and
// the step work space refuses the model in one line naming every size.
TEST(KvMemory, DeviceFitNamesWhatIsNeededAndWhatIsFree) {
  EXPECT_EQ(device_fit_problem("cuda: H100", 2 * GiB, 100 * MiB, 768 * MiB, 80 * GiB), "");
  EXPECT_EQ(device_fit_problem("cuda: H100", 2 * GiB, 100 * MiB, 768 * MiB, 0), "");  // unknown
  const std::string p = device_fit_problem("cuda: H100", 20 * GiB, GiB, GiB / 2, 8 * GiB);
  EXPECT_NE(p.find("does not fit cuda: H100"), std::string::npos) << p;
  EXPECT_NE(p.find("needs 21.50 GiB"), std::string::npos) << p;
  EXPECT_NE(p.find("weights 20.00 GiB"), std::string::npos) << p;
  EXPECT_NE(p.find("8.00 GiB is free"), std::string::npos) << p;
  EXPECT_EQ(p.find('\n'), std::string::npos);
  // Exactly full fits; a byte over does not.
  EXPECT_EQ(device_fit_problem("g", GiB, GiB, GiB, 3 * GiB), "");
  EXPECT_NE(device_fit_problem("g", GiB, GiB, GiB + 1, 3 * GiB), "");
}

TEST(KvMemory, ParsesSizesAndRefusesBadOnes) {
  EXPECT_EQ(parse_memory_size("4"), 4 * GiB);
  EXPECT_EQ(parse_memory_size("0.5"), GiB / 2);
  EXPECT_EQ(parse_memory_size("0.003"), static_cast<int64_t>(0.003 * GiB));
  EXPECT_EQ(parse_memory_size("2G"), 2 * GiB);
  EXPECT_EQ(parse_memory_size("2gib"), 2 * GiB);
  EXPECT_EQ(parse_memory_size("1.5 GB"), 3 * GiB / 2);
  EXPECT_EQ(parse_memory_size("512M"), 512 * MiB);
  EXPECT_EQ(parse_memory_size("512MiB"), 512 * MiB);
  EXPECT_EQ(parse_memory_size(" 64mb "), 64 * MiB);
  const std::string not_a_size =
      "is not a memory size: give a number of GiB (like 4 or 0.5) or a number with M or G (like "
      "512M)";
  for (const char* bad : {"", "abc", "G", "4X", "4 GiBs", "1,5", "nan", "inf", "0x10", "4K"}) {
    EXPECT_EQ(error_of([&] { parse_memory_size(bad); }), "'" + std::string(bad) + "' " + not_a_size)
        << bad;
  }
  EXPECT_EQ(error_of([] { parse_memory_size("0"); }), "memory size '0' must be more than 0");
  EXPECT_EQ(error_of([] { parse_memory_size("-2"); }), "memory size '-2' must be more than 0");
  EXPECT_EQ(error_of([] { parse_memory_size("1e12"); }), "memory size '1e12' is too large");
  EXPECT_EQ(error_of([] { parse_memory_size("1e-12"); }),
            "memory size '1e-12' is less than one byte");
}

// The pool's pages are committed only when written: none at first, all of
// them after commit() (what `pensieve bench` does before its clock starts).
TEST(KvMemory, StorageIsCommittedOnlyWhenWrittenOrAskedTo) {
  KvStorage kv({.n_layers = 3, .n_kv_heads = 2, .head_dim = 64}, 40);  // 3 layers x 2 heads x 64 dims x 16 positions x K,V x 2 B x 40 blocks
  ASSERT_EQ(kv.bytes(), size_t{3 * 2 * 64 * 16 * 2 * 2 * 40});
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((kv.bytes() + page - 1) / page);
  auto count = [&] {
    EXPECT_EQ(::mincore(const_cast<void*>(kv.data()), kv.bytes(), resident.data()), 0);
    size_t n = 0;
    for (unsigned char r : resident) n += r & 1;
    return n;
  };
  EXPECT_EQ(count(), 0u);
  kv.commit();
  EXPECT_EQ(count(), resident.size());
  const kernels::KvLayerView v = kv.layer(2);
  EXPECT_EQ(v.v[v.block_bytes() * 40 - 1], 0);  // contents stay zero
}

// q8 blocks: int8 values plus an f32 scale per 32 dimensions and token, the
// size core/kv_geometry.h promises; a block copied out and back in is the
// same bytes.
TEST(KvMemory, Q8StorageSizesAndBlockRoundTrip) {
  const KvGeometry g{.n_layers = 2, .n_kv_heads = 3, .head_dim = 96, .type = KvType::q8};
  EXPECT_EQ(kv_head_bytes(KvType::q8, 96), 96 * 16 + 3 * 16 * 4);
  EXPECT_EQ(kv_head_bytes(KvType::q8, 96) * 100 / kv_head_bytes(KvType::f16, 96), 56);
  EXPECT_EQ(kv_q8_group(96), 32);
  EXPECT_EQ(kv_q8_group(48), 16);
  EXPECT_EQ(kv_q8_group(8), 8);
  EXPECT_EQ(kv_q8_group(6), 0);
  KvStorage kv(g, 5);
  ASSERT_EQ(kv.bytes(), static_cast<size_t>(g.bytes_per_block() * 5));
  std::vector<std::byte> in(static_cast<size_t>(g.bytes_per_block())), out(in.size());
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::byte>(i * 7 + 3);
  kv.write_block(3, in.data());
  kv.read_block(3, out.data());
  EXPECT_EQ(in, out);
  kv.read_block(2, out.data());
  EXPECT_NE(in, out);
  const kernels::KvLayerView v = kv.layer(1);
  EXPECT_EQ(v.type, KvType::q8);
  // Layer 1's V of block 3 is the last quarter of the block's bytes.
  EXPECT_EQ(std::memcmp(v.v_head(3, 0), in.data() + 3 * g.block_bytes(), static_cast<size_t>(g.block_bytes())), 0);
  EXPECT_THROW(KvStorage({.n_layers = 1, .n_kv_heads = 1, .head_dim = 6, .type = KvType::q8}, 1), Error);
}

}  // namespace
}  // namespace pensieve
