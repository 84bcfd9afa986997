#include "scheduler/registry.h"

#include <gtest/gtest.h>

#include "runtime/net/auth.h"

namespace moreh::scheduler {
namespace {

Node MakeNode(const std::string& name, int devices) {
  Node n;
  n.name = name;
  n.address = "127.0.0.1:1";
  for (int i = 0; i < devices; ++i) n.devices.push_back({i, "cpu", "cpu", 1 << 20, 0});
  return n;
}

TEST(Registry, PacksOntoTheFewestNodes) {
  Registry r;
  const auto t = Clock::now();
  ASSERT_TRUE(r.RegisterWorker(MakeNode("a", 4), t).ok());
  ASSERT_TRUE(r.RegisterWorker(MakeNode("b", 2), t).ok());
  ASSERT_TRUE(r.RegisterWorker(MakeNode("c", 4), t).ok());
  auto l1 = r.Allocate("tok", "1", 2, std::chrono::seconds(10), t).value();
  std::set<std::string> nodes;
  for (auto& [n, d] : l1.devices) nodes.insert(n);
  EXPECT_EQ(nodes, std::set<std::string>({"b"}));  // the tightest single node
  auto l2 = r.Allocate("tok", "2", 6, std::chrono::seconds(10), t).value();
  nodes.clear();
  for (auto& [n, d] : l2.devices) nodes.insert(n);
  EXPECT_EQ(nodes.size(), 2u);
  EXPECT_EQ(r.FreeDevices(), 2);
  EXPECT_EQ(r.Allocate("tok", "3", 3, std::chrono::seconds(10), t).status().code(),
            StatusCode::kResourceExhausted);
  // Idempotent by (token, request id); another token's same id is a different request.
  EXPECT_EQ(r.Allocate("tok", "1", 2, std::chrono::seconds(10), t).value().id, l1.id);
  EXPECT_EQ(r.Allocate("other", "1", 2, std::chrono::seconds(10), t).value().devices.size(), 2u);
  EXPECT_FALSE(r.Release(l1.id, "wrong").ok());
  EXPECT_TRUE(r.Release(l1.id, l1.secret).ok());
  EXPECT_EQ(r.FreeDevices(), 2);
}

TEST(Registry, DeadNodesAndExpiredLeases) {
  Registry r;
  auto t = Clock::now();
  ASSERT_TRUE(r.RegisterWorker(MakeNode("a", 2), t).ok());
  ASSERT_TRUE(r.RegisterWorker(MakeNode("b", 2), t).ok());
  auto l = r.Allocate("tok", "1", 4, std::chrono::seconds(5), t).value();
  ASSERT_TRUE(r.Heartbeat("a", t + std::chrono::seconds(2)).ok());
  const auto hit = r.ReapDead(t + std::chrono::seconds(3), std::chrono::seconds(2));
  ASSERT_EQ(hit.size(), 1u);
  EXPECT_EQ(hit[0].first, l.id);
  EXPECT_EQ(hit[0].second, "b");  // the dead node is named
  EXPECT_FALSE(r.nodes().at("b").alive);
  EXPECT_TRUE(r.nodes().at("a").alive);
  EXPECT_FALSE(r.Heartbeat("b", t + std::chrono::seconds(3)).ok());  // must register again
  EXPECT_TRUE(r.Renew(l.id, l.secret, std::chrono::seconds(5), t + std::chrono::seconds(4)).ok());
  EXPECT_TRUE(r.ExpireLeases(t + std::chrono::seconds(8)).empty());
  EXPECT_EQ(r.ExpireLeases(t + std::chrono::seconds(10)), std::vector<uint64_t>({l.id}));
  EXPECT_EQ(r.FreeDevices(), 2);  // b is dead: its devices are not in the pool
  ASSERT_TRUE(r.RegisterWorker(MakeNode("b", 2), t + std::chrono::seconds(11)).ok());
  EXPECT_EQ(r.FreeDevices(), 4);
}

TEST(Registry, BadRegistrationsAreNamed) {
  Registry r;
  Node n = MakeNode("x", 2);
  n.devices[1].id = 0;
  EXPECT_NE(r.RegisterWorker(n, Clock::now()).message().find("device id 0 twice"),
            std::string::npos);
  EXPECT_FALSE(r.RegisterWorker(MakeNode("", 1), Clock::now()).ok());
  EXPECT_FALSE(r.RegisterWorker(MakeNode("y", 0), Clock::now()).ok());
  EXPECT_TRUE(net::SecretsEqual("abc", "abc"));
  EXPECT_FALSE(net::SecretsEqual("abc", "abd"));
  EXPECT_FALSE(net::SecretsEqual("abc", "abcd"));
}

}  // namespace
}  // namespace moreh::scheduler
