// Drives moreh::data::Tokenizer for tests/runtime/data/check_tokenizer_json.py and bench/tokenize.
//
//   moreh_tokenize_tool PATH          PATH: a tokenizer.json, tokenizer.model or a directory.
//       Prints {"vocab_size", "bos_id", "eos_id", "pad_id"}, then answers one JSON line per
//       request line on stdin:
//         {"text": s, "add_special": b}  -> {"ids": Encode(s, b), "decoded": Decode(those ids)}
//         {"text": s, "max_length": n}   -> {"ids": EncodeToLength(s, n)}
//         {"decode": [ids]}              -> {"decoded": Decode(ids)}
//       A request that is not valid JSON gets {"error": ...}.
//   moreh_tokenize_tool PATH --bench FILE [REPEAT]
//       Encodes each line of FILE (newline kept, no special tokens) on one thread, REPEAT times
//       (default 1), and prints {"lines", "bytes", "tokens", "seconds"} for the fastest pass.
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/data/tokenizer.h"

namespace {
using json = nlohmann::json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

int Bench(const moreh::data::Tokenizer& tok, const std::string& file, int repeat) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::cerr << file << ": cannot open\n";
    return 2;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  std::vector<std::string_view> lines;
  for (size_t pos = 0; pos < all.size();) {
    size_t end = all.find('\n', pos);
    end = end == std::string::npos ? all.size() : end + 1;
    lines.push_back(std::string_view(all).substr(pos, end - pos));
    pos = end;
  }
  double best = 1e30;
  size_t tokens = 0;
  for (int r = 0; r < repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    size_t n = 0;
    for (std::string_view line : lines) n += tok.Encode(line, false).size();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    tokens = n;
  }
  std::cout << Dump(json{{"lines", lines.size()},
                         {"bytes", all.size()},
                         {"tokens", tokens},
                         {"seconds", best}})
            << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: moreh_tokenize_tool PATH [--bench FILE [REPEAT]]\n";
    return 2;
  }
  auto loaded = moreh::data::Tokenizer::Load(argv[1]);
  if (!loaded.ok()) {
    std::cerr << loaded.status().ToString() << "\n";
    return 1;
  }
  const moreh::data::Tokenizer& tok = loaded.value();
  if (argc >= 4 && std::string(argv[2]) == "--bench") {
    return Bench(tok, argv[3], argc >= 5 ? std::max(1, std::atoi(argv[4])) : 1);
  }
  std::cout << Dump(json{{"vocab_size", tok.vocab_size()},
                         {"bos_id", tok.bos_id()},
                         {"eos_id", tok.eos_id()},
                         {"pad_id", tok.pad_id()}})
            << "\n";
  std::string line;
  while (std::getline(std::cin, line)) {
    json req = json::parse(line, nullptr, false);
    json out;
    try {
      if (req.is_discarded() || !req.is_object()) {
        out = json{{"error", "not a JSON object"}};
      } else if (req.contains("decode")) {
        out["decoded"] = tok.Decode(req["decode"].get<std::vector<int64_t>>());
      } else if (req.contains("max_length")) {
        out["ids"] =
            tok.EncodeToLength(req["text"].get<std::string>(), req["max_length"].get<int64_t>());
      } else {
        const std::vector<int64_t> ids =
            tok.Encode(req["text"].get<std::string>(), req.value("add_special", true));
        out["ids"] = ids;
        out["decoded"] = tok.Decode(ids);
      }
    } catch (const std::exception& e) {
      out = json{{"error", e.what()}};
    }
    std::cout << Dump(out) << "\n";
  }
  std::cout.flush();
  return 0;
}
