// Logging: spdlog with the reference platform's pattern "[%Y-%m-%d %H:%M:%S.%e] [%l] %v".
// InitLogging() is idempotent and thread-safe; every entry point calls it.
#pragma once

namespace moreh {
void InitLogging();
}  // namespace moreh
