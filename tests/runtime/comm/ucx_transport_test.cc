// The UCX transport's own settings (runtime/comm/ucx_transport.cc) take effect: UCX warns
// "invalid configuration" for a setting it does not apply and keeps its default instead (the
// shared-memory FIFO's size, named as the POSIX transport's, stayed at 64 entries that way).
#include "runtime/comm/ucx_transport.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace moreh::comm
