// Secrets of the control plane: random secrets, their stored form (a SHA-256 hash, so a copied
// scheduler database or a worker's memory hands over no usable secret), constant-time comparison,
// and the MAC under the cluster key with which workers vouch for the UCX addresses they hand out
// through clients (which do not hold the key).
#pragma once

#include <string>
#include <string_view>

namespace moreh::net {

// 128 random bits from the OS (OpenSSL's RAND_bytes), as 32 hex digits.
std::string RandomSecret();
// SHA-256 of `secret`, as 64 hex digits.
std::string HashSecret(std::string_view secret);
// Constant-time comparison (the time depends only on the lengths).
bool SecretsEqual(std::string_view a, std::string_view b);
// HMAC-SHA256 of `message` under `key`, as hex.
std::string Mac(std::string_view key, std::string_view message);

}  // namespace moreh::net
