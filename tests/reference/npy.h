// Minimal .npy (NumPy format 1.0/2.0) reading and writing for the PyTorch reference tests:
// little-endian f4, f8, i4, i8, C order. Header-only; test support code.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>

#include "runtime/core/tensor.h"

namespace moreh::testing {

inline runtime::Tensor ReadNpy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[6];
  f.read(magic, 6);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not a .npy file");
  unsigned char ver[2];
  f.read(reinterpret_cast<char*>(ver), 2);
  uint32_t hlen = 0;
  if (ver[0] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    hlen = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  std::string header(hlen, '\0');
  f.read(header.data(), hlen);
  auto field = [&](const std::string& key) {
    const size_t p = header.find("'" + key + "'");
    if (p == std::string::npos) throw std::runtime_error(path + ": no " + key);
    return p + key.size() + 3;
  };
  size_t p = field("descr");
  const size_t q1 = header.find('\'', p), q2 = header.find('\'', q1 + 1);
  const std::string descr = header.substr(q1 + 1, q2 - q1 - 1);
  if (header.find("'fortran_order': True") != std::string::npos)
    throw std::runtime_error(path + ": Fortran order");
  p = field("shape");
  const size_t l = header.find('(', p), r = header.find(')', l);
  Shape shape;
  std::string dims = header.substr(l + 1, r - l - 1);
  size_t pos = 0;
  while (pos < dims.size()) {
    const size_t comma = dims.find(',', pos);
    const std::string tok =
        dims.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (tok.find_first_of("0123456789") != std::string::npos) shape.push_back(std::stoll(tok));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  DType dt;
  bool f64 = false;
  if (descr == "<f4")
    dt = DType::kF32;
  else if (descr == "<f8") {
    dt = DType::kF32;
    f64 = true;
  } else if (descr == "<i4")
    dt = DType::kI32;
  else if (descr == "<i8")
    dt = DType::kI64;
  else
    throw std::runtime_error(path + ": unsupported dtype " + descr);
  runtime::Tensor t = runtime::Tensor::Empty(shape, dt);
  if (f64) {
    std::string buf(static_cast<size_t>(t.numel() * 8), '\0');
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const double* d = reinterpret_cast<const double*>(buf.data());
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(d[i]);
  } else {
    f.read(static_cast<char*>(t.raw_data()), t.nbytes());
  }
  if (!f) throw std::runtime_error(path + ": truncated");
  return t;
}

inline void WriteNpy(const std::string& path, const runtime::Tensor& t_in) {
  runtime::Tensor t = IsFloating(t_in.dtype()) ? t_in.To(DType::kF32).Contiguous()
                                               : t_in.To(DType::kI64).Contiguous();
  std::string shape = "(";
  for (int64_t d : t.shape()) shape += std::to_string(d) + ",";
  shape += ")";
  std::string header = std::string("{'descr': '") + (t.dtype() == DType::kF32 ? "<f4" : "<i8") +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t hl = static_cast<uint16_t>(header.size());
  const char hb[2] = {static_cast<char>(hl & 0xff), static_cast<char>(hl >> 8)};
  f.write(hb, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(t.raw_data()), t.nbytes());
  if (!f) throw std::runtime_error("cannot write " + path);
}

}  // namespace moreh::testing
