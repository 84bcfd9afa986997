// The UCX transport's own settings (runtime/comm/ucx_transport.cc) take effect: UCX warns
// "invalid configuration" for a setting it does not apply and keeps its default instead (the
// shared-memory FIFO's size, named as the POSIX transport's, stayed at 64 entries that way). A
// transport restricted to one network interface listens on that interface only, and moves data.
#include "runtime/comm/ucx_transport.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace moreh::comm {
namespace {

TEST(UcxTransport, ItsSettingsApplyWithoutWarnings) {
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  auto t = UcxTransport::Create(0);
  const std::string out = testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(t.ok()) << t.status().message();
  for (const std::string& log : {out, err}) {
    EXPECT_EQ(log.find("UCX  WARN"), std::string::npos) << log;
  }
}

// The local addresses ("a.b.c.d:port", or "v6:port") of the TCP sockets this process listens on.
std::set<std::string> ListeningSockets() {
  std::set<std::string> inodes;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    if (!ec && target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::set<std::string> out;
  for (const char* table : {"/proc/self/net/tcp", "/proc/self/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream row(line);
      std::string slot, local, remote, state, queues, timer, retr, uid, timeout, inode;
      row >> slot >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode;
      if (state != "0A" || !inodes.count(inode)) continue;  // 0A: LISTEN
      const size_t colon = local.find(':');
      const std::string addr = local.substr(0, colon);
      const int port = std::stoi(local.substr(colon + 1), nullptr, 16);
      char text[INET6_ADDRSTRLEN] = "?";
      if (addr.size() == 8) {
        in_addr a{};
        a.s_addr = static_cast<uint32_t>(std::stoul(addr, nullptr, 16));
        inet_ntop(AF_INET, &a, text, sizeof text);
      } else {
        in6_addr a{};
        for (int w = 0; w < 4; ++w) {
          const uint32_t v = static_cast<uint32_t>(std::stoul(addr.substr(8 * w, 8), nullptr, 16));
          std::memcpy(&a.s6_addr[4 * w], &v, 4);
        }
        inet_ntop(AF_INET6, &a, text, sizeof text);
      }
      out.insert(std::string(text) + ":" + std::to_string(port));
    }
  }
  return out;
}

// An IPv4 address of an interface other than loopback, with the interface's name.
std::pair<std::string, std::string> ExternalInterface() {
  ifaddrs* list = nullptr;
  std::pair<std::string, std::string> found;
  if (getifaddrs(&list) != 0) return found;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK) ||
        !(i->ifa_flags & IFF_UP)) {
      continue;
    }
    char text[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof text);
    found = {text, i->ifa_name};
    break;
  }
  freeifaddrs(list);
  return found;
}

std::set<std::string> NewSince(const std::set<std::string>& before) {
  std::set<std::string> out;
  for (const auto& s : ListeningSockets()) {
    if (!before.count(s)) out.insert(s);
  }
  return out;
}

TEST(UcxTransport, NetDeviceForAddressNamesTheInterface) {
  EXPECT_EQ(NetDeviceForAddress("127.0.0.1").value(), "lo");
  EXPECT_EQ(NetDeviceForAddress("127.0.0.2").value(), "lo");
  EXPECT_EQ(NetDeviceForAddress("0.0.0.0").value(), "");  // a wildcard restricts nothing
  EXPECT_EQ(NetDeviceForAddress("203.0.113.77").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(NetDeviceForAddress("worker-3").status().code(), StatusCode::kInvalidArgument);
  const auto [address, name] = ExternalInterface();
  if (!address.empty()) {
    EXPECT_EQ(NetDeviceForAddress(address).value(), name);
  }
}

// The probe's finding: with every daemon on 127.0.0.1, a job's UCX listened on the external
// interface too. Restricted to "lo" it listens on loopback only, and still moves data.
TEST(UcxTransport, RestrictedToAnInterfaceItListensOnlyThere) {
  if (std::getenv("UCX_NET_DEVICES")) GTEST_SKIP() << "UCX_NET_DEVICES is set: the user's wins";
  const auto [external, name] = ExternalInterface();
  if (external.empty()) GTEST_SKIP() << "this machine has no network interface besides loopback";
  auto before = ListeningSockets();
  auto open = UcxTransport::Create(0);
  ASSERT_TRUE(open.ok()) << open.status().message();
  const auto unrestricted = NewSince(before);
  bool beyond_loopback = false;
  for (const auto& s : unrestricted) beyond_loopback |= s.rfind("127.", 0) != 0;
  ASSERT_TRUE(beyond_loopback)
      << "an unrestricted transport should listen beyond loopback here (else this test proves "
         "nothing): "
      << ::testing::PrintToString(unrestricted);
  before = ListeningSockets();
  auto a = UcxTransport::Create(0, "lo");
  auto b = UcxTransport::Create(1, "lo");
  ASSERT_TRUE(a.ok() && b.ok());
  const auto restricted = NewSince(before);
  for (const auto& s : restricted) EXPECT_EQ(s.rfind("127.", 0), 0u) << s;
  // And data moves between the two.
  ASSERT_TRUE(a.value()->Connect(1, b.value()->address()).ok());
  ASSERT_TRUE(b.value()->Connect(0, a.value()->address()).ok());
  int64_t sent = 42, got = 0;
  auto r = b.value()->Recv(0, &got, sizeof got, 3, 0);
  auto s = a.value()->Send(1, &sent, sizeof sent, 3, 0);
  ASSERT_TRUE(r.ok() && s.ok());
  // Each side progresses in turn until both complete.
  bool done_s = false, done_r = false;
  for (int i = 0; i < 200000 && !(done_s && done_r); ++i) {
    done_s = done_s || a.value()->Completed(s.value());
    done_r = done_r || b.value()->Completed(r.value());
  }
  EXPECT_TRUE(done_s && done_r);
  EXPECT_EQ(got, 42);
}

}  // namespace
}  // namespace moreh::comm
