// The protocol defined once (runtime/net/protocol.h): every message name round-trips, every struct
// survives ToJson -> FromJson, and every refusal names the message and the field. The field reader
// beneath it, and the secrets' hashes and MACs against published test vectors.
#include "runtime/net/protocol.h"

#include <gtest/gtest.h>

#include <set>

#include "runtime/core/field_reader.h"
#include "runtime/net/auth.h"
#include "runtime/net/json_connection.h"

namespace moreh::net {
namespace {
using json = nlohmann::json;

std::string ErrorOf(const Status& s) { return s.ok() ? "(ok)" : s.message(); }

TEST(FieldReader, NamesTheFieldTheTypeAndTheRange) {
  const json j = {{"s", "text"},
                  {"i", 5},
                  {"u", -3},
                  {"f", 1.5},
                  {"b", true},
                  {"n", nullptr},
                  {"a", {1, 2, 3}},
                  {"o", {{"x", 1}}},
                  {"big", 18446744073709551615ull},
                  {"list", {{{"k", 1}}, {{"k", "two"}}}}};
  auto first = [&](auto read) {
    FieldReader f(j, "msg");
    read(f);
    return ErrorOf(f.status());
  };
  EXPECT_EQ(first([](FieldReader& f) { f.Str("i"); }), "msg: 'i' must be a string, not an integer");
  EXPECT_EQ(first([](FieldReader& f) { f.Int("s"); }), "msg: 's' must be an integer, not a string");
  EXPECT_EQ(first([](FieldReader& f) { f.Int("f"); }),
            "msg: 'f' must be an integer, not a fractional number");
  EXPECT_EQ(first([](FieldReader& f) { f.Int("n"); }), "msg: 'n' must be an integer, not null");
  EXPECT_EQ(first([](FieldReader& f) { f.Int("i", 0, 4); }), "msg: 'i' is 5; it must be in [0, 4]");
  EXPECT_EQ(first([](FieldReader& f) { f.U64("u"); }),
            "msg: 'u' is -3; it must be in [0, 18446744073709551615]");
  EXPECT_EQ(first([](FieldReader& f) { f.Int("big"); }),
            "msg: 'big' is 18446744073709551615; it must be in [-9223372036854775808, "
            "9223372036854775807]");
  EXPECT_EQ(first([](FieldReader& f) { f.Bool("i"); }),
            "msg: 'i' must be true or false, not an integer");
  EXPECT_EQ(first([](FieldReader& f) { f.Array("o", 10); }),
            "msg: 'o' must be an array, not an object");
  EXPECT_EQ(first([](FieldReader& f) { f.Array("a", 2); }),
            "msg: 'a' has 3 elements; at most 2 are allowed");
  EXPECT_EQ(first([](FieldReader& f) { f.Object("a"); }),
            "msg: 'a' must be an object, not an array");
  EXPECT_EQ(first([](FieldReader& f) { f.Str("s", 3); }),
            "msg: 's' is 4 bytes long; at most 3 are allowed");
  EXPECT_EQ(first([](FieldReader& f) { f.Num("missing"); }), "msg: 'missing' is missing");
  EXPECT_EQ(first([](FieldReader& f) { f.OptInt("s", 0); }),
            "msg: 's' must be an integer, not a string");  // present with the wrong type
  EXPECT_EQ(first([](FieldReader& f) { EXPECT_EQ(f.OptInt("missing", 7), 7); }), "(ok)");
  // Nested readers name the path; the first problem wins.
  EXPECT_EQ(first([](FieldReader& f) { f.Sub("o").Str("x"); }),
            "msg: 'o.x' must be a string, not an integer");
  EXPECT_EQ(first([&](FieldReader& f) {
              const json& list = f.Array("list", 8);
              for (size_t i = 0; i < list.size(); ++i) f.Element(list, i, "list").Int("k");
              f.Str("i");  // a later problem does not replace the first
            }),
            "msg: 'list[1].k' must be an integer, not a string");
  const json array = json::array();
  FieldReader not_object(array, "msg");
  EXPECT_EQ(ErrorOf(not_object.status()), "msg: must be a JSON object, not an array");
}

TEST(Protocol, EveryMessageNameRoundTrips) {
  std::set<std::string> names;
  for (int i = 0; i <= static_cast<int>(Msg::kJobEndOk); ++i) {
    const Msg m = static_cast<Msg>(i);
    const std::string name(MsgName(m));
    EXPECT_TRUE(names.insert(name).second) << "twice: " << name;
    EXPECT_EQ(MsgFromName(name), m);
    EXPECT_EQ(TypeOf(Message(m)).value(), m);
  }
  EXPECT_FALSE(MsgFromName("bogus").has_value());
  EXPECT_EQ(ErrorOf(TypeOf({{"type", "bogus"}}).status()), "unknown message type 'bogus'");
  EXPECT_FALSE(TypeOf({{"type", 3}}).ok());
  EXPECT_FALSE(TypeOf(json::array()).ok());
}

TEST(Protocol, StructsSurviveTheirJson) {
  RegisterWorker r;
  r.node = "node7";
  r.address = "10.0.0.7:4040";
  r.devices = {{0, "cuda", "NVIDIA H200", int64_t{140} << 30}, {1, "cuda", "NVIDIA H200", 1 << 30}};
  r.profile.gemm_flops_f32 = 1.5e12;
  r.profile.threads = 8;
  r.profile.gemm_flops_bf16 = 7e14;
  auto r2 = RegisterWorker::FromJson(r.ToJson());
  ASSERT_TRUE(r2.ok()) << r2.status().message();
  EXPECT_EQ(r2->ToJson(), r.ToJson());

  AllocateOk a;
  a.lease = 42;
  a.secret = RandomSecret();
  a.ttl_ms = 30000;
  GrantedDeviceInfo g;
  g.node = "n";
  g.address = "127.0.0.1:9";
  g.device = 3;
  g.kind = "cpu";
  g.name = "cpu:3";
  g.memory_bytes = 1 << 20;
  g.profile.link_bandwidth = 4e9;
  a.devices = {g};
  EXPECT_EQ(AllocateOk::FromJson(a.ToJson()).value().ToJson(), a.ToJson());

  for (const json& m :
       {SchedulerHello{1, Role::kWorker, "k", ""}.ToJson(),
        SchedulerHello{1, Role::kClient, "", "tok"}.ToJson(),
        AllocateRequest{"r", 12, "Large", 0}.ToJson(), AllocateRequest{"r", 12, "", 3}.ToJson(),
        LeaseCredentials{5, "s"}.ToJson(Msg::kRenew), WorkerHello{1, 5, "s"}.ToJson(),
        LeaseGranted{5, HashSecret("s"), {0, 2}}.ToJson(), DropLease{5}.ToJson(),
        LeaseLost{5, "worker 'a' stopped heartbeating"}.ToJson(), Busy{77, 1}.ToJson(),
        RegisterOk{250}.ToJson(),
        Vdevs{{{0, "Small", 1, true, 0, 0}, {1, "Large", 4, false, 99, 3}}, 0}.ToJson()}) {
    json back;
    switch (TypeOf(m).value()) {
      case Msg::kHello:
        back = m.contains("role") ? SchedulerHello::FromJson(m).value().ToJson()
                                  : WorkerHello::FromJson(m).value().ToJson();
        break;
      case Msg::kAllocate:
        back = AllocateRequest::FromJson(m).value().ToJson();
        break;
      case Msg::kRenew:
        back = LeaseCredentials::FromJson(m).value().ToJson(Msg::kRenew);
        break;
      case Msg::kLeaseGranted:
        back = LeaseGranted::FromJson(m).value().ToJson();
        break;
      case Msg::kDropLease:
        back = DropLease::FromJson(m).value().ToJson();
        break;
      case Msg::kLeaseLost:
        back = LeaseLost::FromJson(m).value().ToJson();
        break;
      case Msg::kBusy:
        back = Busy::FromJson(m).value().ToJson();
        break;
      case Msg::kRegisterOk:
        back = RegisterOk::FromJson(m).value().ToJson();
        break;
      case Msg::kVdevs:
        back = Vdevs::FromJson(m).value().ToJson();
        break;
      default:
        FAIL() << m.dump();
    }
    EXPECT_EQ(back, m);
  }
  ErrorReply e;
  e.request = "allocate";
  e.message = "3 devices requested, 2 free";
  e.code = kNotEnoughDevices;
  e.needed = 3;
  e.free = 2;
  e.alive = 4;
  EXPECT_EQ(ErrorReply::FromJson(e.ToJson()).value().ToJson(), e.ToJson());
}

// The probe's crashing messages, and their kin: refused with the message and the field named.
TEST(Protocol, RefusalsNameTheMessageAndTheField) {
  const auto hello = [](json m) { return ErrorOf(SchedulerHello::FromJson(m).status()); };
  EXPECT_EQ(hello({{"type", "hello"}, {"version", "1"}, {"role", "client"}, {"token", "t"}}),
            "hello: 'version' must be an integer, not a string");
  EXPECT_EQ(hello({{"type", "hello"}, {"version", 1}, {"role", "admin"}}),
            "hello: 'role' is 'admin'; it must be 'worker' or 'client'");
  EXPECT_EQ(hello({{"type", "hello"}, {"version", 1}, {"role", "client"}, {"token", ""}}),
            "hello: 'token' must not be empty");
  EXPECT_EQ(
      ErrorOf(WorkerHello::FromJson({{"version", 1}, {"lease", "abc"}, {"secret", "s"}}).status()),
      "hello: 'lease' must be an integer, not a string");
  EXPECT_EQ(ErrorOf(WorkerHello::FromJson({{"version", 1}, {"lease", 3}, {"secret", 5}}).status()),
            "hello: 'secret' must be a string, not an integer");
  EXPECT_EQ(
      ErrorOf(AllocateRequest::FromJson({{"type", "allocate"}, {"request_id", "r"}, {"pid", "abc"}})
                  .status()),
      "allocate: 'pid' must be an integer, not a string");
  EXPECT_EQ(ErrorOf(AllocateRequest::FromJson(
                        {{"request_id", "r"}, {"device_size", "Small"}, {"num_devices", 2}})
                        .status()),
            "allocate: give 'device_size' or 'num_devices', not both");
  EXPECT_EQ(ErrorOf(DeviceOf({{"type", "job_end"}, {"device", "zero"}}).status()),
            "job_end: 'device' must be an integer, not a string");
  EXPECT_EQ(ErrorOf(DeviceOf({{"type", "job_end"}, {"device", -1}}).status()),
            "job_end: 'device' is -1; it must be in [0, 65535]");
  json reg = {{"type", "register_worker"},
              {"node", "n"},
              {"address", "127.0.0.1:1"},
              {"devices", {{{"id", 0}, {"kind", "cpu"}, {"name", "c"}, {"memory_bytes", 1}}}}};
  EXPECT_EQ(ErrorOf(RegisterWorker::FromJson(reg).status()), "(ok)");
  for (const auto& [path, value, expect] : std::vector<std::tuple<std::string, json, std::string>>{
           {"/devices/0/memory_bytes", 0, "'devices[0].memory_bytes' is 0"},
           {"/devices/0/kind", "tpu", "'devices[0].kind' is 'tpu'"},
           {"/devices/0", 7, "'devices[0]' must be an object, not an integer"},
           {"/address", "nohost", "'address' is 'nohost', not HOST:PORT"},
           {"/address", "h:70000", "'address' is 'h:70000', not HOST:PORT"},
           {"/devices", json::array(), "'devices' must not be empty"},
           {"/profile", {{"threads", -4}}, "'profile.threads' is -4"},
       }) {
    json m = reg;
    m[json::json_pointer(path)] = value;
    const std::string e = ErrorOf(RegisterWorker::FromJson(m).status());
    EXPECT_NE(e.find("register_worker: " + expect), std::string::npos) << path << ": " << e;
  }
  EXPECT_EQ(ErrorOf(CheckWorkerRequest(Msg::kJobUpdate, {{"lr", "fast"}})),
            "job_update: 'lr' must be a number, not a string");
  EXPECT_EQ(ErrorOf(CheckWorkerRequest(Msg::kJobSave, {{"tmp_dir", "/t"}, {"dtype", "i8"}})),
            "job_save: 'dtype' is 'i8'; it must be f32, bf16 or f16");
  EXPECT_EQ(ErrorOf(CheckWorkerRequest(Msg::kJobStep, {{"step", 0}, {"micro_batches", 3}})),
            "job_step: 'micro_batches' must be an array, not an integer");
  EXPECT_EQ(ErrorOf(CheckWorkerRequest(Msg::kRunGraph, {{"graph", json::object()}})), "(ok)");
}

TEST(Protocol, DeviceSizesAreTheReferencePlatforms) {
  EXPECT_EQ(DeviceSizeCount("Small"), 1);
  EXPECT_EQ(DeviceSizeCount("4XLARGE"), 32);
  EXPECT_EQ(DeviceSizeCount("1.5xLarge"), 12);
  EXPECT_EQ(DeviceSizeCount("48xlarge"), 384);
  EXPECT_EQ(DeviceSizeCount("huge"), -1);
  EXPECT_EQ(DeviceSizes().size(), 13u);
}

TEST(Auth, HashesAndMacsMatchPublishedVectors) {
  // FIPS 180-2 SHA-256("abc"); RFC 4231 test case 2 for HMAC-SHA256.
  EXPECT_EQ(HashSecret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Mac("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  const std::string a = RandomSecret(), b = RandomSecret();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
  EXPECT_TRUE(SecretsEqual(a, a));
  EXPECT_FALSE(SecretsEqual(a, b));
  EXPECT_FALSE(SecretsEqual("abc", "abcd"));
}

TEST(ConnectionLimits, BadLimitsAreNamed) {
  ConnectionLimits l;
  EXPECT_TRUE(l.Validate().ok());
  l.max_frame = 100;
  EXPECT_NE(ErrorOf(l.Validate()).find("frame limits"), std::string::npos);
  l = ConnectionLimits();
  l.max_connections = 0;
  EXPECT_NE(ErrorOf(l.Validate()).find("connection caps"), std::string::npos);
  l = ConnectionLimits();
  l.idle_timeout = std::chrono::milliseconds(0);
  EXPECT_NE(ErrorOf(l.Validate()).find("time-outs"), std::string::npos);
}

}  // namespace
}  // namespace moreh::net
