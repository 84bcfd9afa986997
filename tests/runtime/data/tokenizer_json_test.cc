// Tokenizer on Hugging Face tokenizer.json files (runtime/data/hf_tokenizer.cc), written by hand
// into a temporary directory: the BPE's merge order, ignore_merges, byte fallback and unk, added
// tokens split out of the text, the template, decoding, the facade's choices in a directory, and
// every refusal of what is not implemented and every malformed file. The comparison with the
// real library on realistic files is tests/runtime/data/check_tokenizer_json.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/data/tokenizer.h"

namespace moreh::data {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kSource = MOREH_SOURCE_DIR;

class TokenizerJson : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("moreh_tokjson_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
  std::string Write(const std::string& name, const json& j) { return Write(name, j.dump()); }

  Tokenizer Load(const json& j) {
    auto t = Tokenizer::Load(Write("t.json", j));
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return std::move(t).value();
  }
  // The load error's message for this file.
  std::string Refusal(const json& j) { return RefusalOf(Write("bad.json", j.dump())); }
  // `base` edited by `edit` is refused with a message naming `field` and saying `what`.
  void ExpectRefused(const json& base, const std::function<void(json&)>& edit,
                     const std::string& field, const std::string& what) {
    json k = base;
    edit(k);
    const std::string m = Refusal(k);
    EXPECT_NE(m.find(field), std::string::npos) << m;
    EXPECT_NE(m.find(what), std::string::npos) << m;
  }
  std::string RefusalOf(const std::string& path) {
    auto t = Tokenizer::Load(path);
    EXPECT_FALSE(t.ok()) << "loaded " << path;
    if (t.ok()) return "";
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find(path), std::string::npos) << t.status().message();
    return t.status().message();
  }

  fs::path dir_;
};

// A BPE over single letters, no normalizer or pre-tokenizer: the word is the whole text.
json Letters(const std::vector<std::string>& extra, const json& merges) {
  json vocab = json::object();
  for (char c = 'a'; c <= 'z'; ++c) vocab[std::string(1, c)] = c - 'a';
  for (const std::string& e : extra) vocab[e] = static_cast<int>(vocab.size());
  return json{{"version", "1.0"},
              {"added_tokens", json::array()},
              {"normalizer", nullptr},
              {"pre_tokenizer", nullptr},
              {"post_processor", nullptr},
              {"decoder", {{"type", "Fuse"}}},
              {"model",
               {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merges}}}};
}

int Id(const json& j, const std::string& token) { return j["model"]["vocab"][token].get<int>(); }

TEST_F(TokenizerJson, MergesApplyByRankLeftmostFirst) {
  // "abc": with (b c) ranked first the word ends as a+bc -> abc; with (a b) first, ab + c.
  const std::vector<std::string> extra = {"ab", "bc", "abc"};
  json bc_first = Letters(extra, json::array({"b c", "a b", "a bc"}));
  EXPECT_EQ(Load(bc_first).Encode("abc", false), std::vector<int64_t>{Id(bc_first, "abc")});
  json ab_first = Letters(extra, json::array({"a b", "b c", "a bc"}));
  EXPECT_EQ(Load(ab_first).Encode("abc", false),
            (std::vector<int64_t>{Id(ab_first, "ab"), Id(ab_first, "c")}));
  // Equal ranks: the leftmost pair merges first ("aaa" -> aa + a, not a + aa).
  json aa = Letters({"aa"}, json::array({json::array({"a", "a"})}));
  EXPECT_EQ(Load(aa).Encode("aaa", false), (std::vector<int64_t>{Id(aa, "aa"), Id(aa, "a")}));
  EXPECT_EQ(Load(aa).Decode(Load(aa).Encode("aaaaa", false)), "aaaaa");
}

TEST_F(TokenizerJson, BothMergeStylesLoadTheSame) {
  const std::vector<std::string> extra = {"th", "the", "he"};
  const Tokenizer legacy = Load(Letters(extra, json::array({"t h", "th e", "h e"})));
  const Tokenizer pairs = Load(Letters(
      extra,
      json::array({json::array({"t", "h"}), json::array({"th", "e"}), json::array({"h", "e"})})));
  for (const char* s : {"the", "thethe", "hethe", "tthhee"}) {
    EXPECT_EQ(legacy.Encode(s, false), pairs.Encode(s, false)) << s;
  }
  EXPECT_EQ(legacy.Encode("the", false).size(), 1u);
}

TEST_F(TokenizerJson, IgnoreMergesTakesAWholeWordFromTheVocab) {
  json j = Letters({"ab", "abc"}, json::array({"a b"}));  // no merge makes "abc"
  EXPECT_EQ(Load(j).Encode("abc", false), (std::vector<int64_t>{Id(j, "ab"), Id(j, "c")}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(Load(j).Encode("abc", false), std::vector<int64_t>{Id(j, "abc")});
  EXPECT_EQ(Load(j).Encode("abcabc", false).size(), 4u);  // not a vocab word: ab c ab c
}

TEST_F(TokenizerJson, LongWordsMergeWithoutQuadraticTime) {
  // 200k identical letters with a chain of doubling merges: the heap makes this O(n log n).
  json j = Letters({"aa", "aaaa", "aaaaaaaa"}, json::array({"a a", "aa aa", "aaaa aaaa"}));
  const Tokenizer t = Load(j);
  const auto start = std::chrono::steady_clock::now();
  const auto ids = t.Encode(std::string(200000, 'a'), false);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(ids, std::vector<int64_t>(25000, Id(j, "aaaaaaaa")));
  EXPECT_LT(s, 5.0);
}

// A SentencePiece-converted BPE (Gemma's shape): <pad> <eos> <bos> <unk>, <0x00>..<0xFF>, then
// pieces; Replace(" " -> "▁"), byte_fallback, unk, BOS template, Replace/ByteFallback/Fuse decoder.
json SentencePieceStyle() {
  json vocab = {{"<pad>", 0}, {"<eos>", 1}, {"<bos>", 2}, {"<unk>", 3}};
  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 4 + b;
  }
  int next = 260;
  for (const char* p : {"\xE2\x96\x81", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "hell",
                        "hello", "\xE2\x96\x81w", "\xE2\x96\x81wor", "or", "ld"}) {
    vocab[p] = next++;
  }
  const json added = json::array(
      {{{"id", 0}, {"content", "<pad>"}, {"special", true}, {"normalized", false}},
       {{"id", 1}, {"content", "<eos>"}, {"special", true}, {"normalized", false}},
       {{"id", 2}, {"content", "<bos>"}, {"special", true}, {"normalized", false}},
       {{"id", 3}, {"content", "<unk>"}, {"special", true}, {"normalized", false}},
       {{"id", next}, {"content", "<end_of_turn>"}, {"special", true}, {"normalized", false}}});
  return json{
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<bos>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array()},
        {"special_tokens",
         {{"<bos>", {{"id", "<bos>"}, {"ids", json::array({2})}, {"tokens", {"<bos>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         json::array(
             {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}}})}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", json::array({"h e", "l l", "he ll", "hell o", "o r", "l d", "\xE2\x96\x81 w",
                                "\xE2\x96\x81w or"})}}}};
}

TEST_F(TokenizerJson, ByteFallbackUnkAndTheTemplate) {
  json j = SentencePieceStyle();
  const Tokenizer t = Load(j);
  const auto id = [&](const char* s) { return static_cast<int64_t>(Id(j, s)); };
  // "hello wörld": ö is not a piece, so its two UTF-8 bytes are <0xC3> <0xB6>.
  EXPECT_EQ(t.Encode("hello w\xC3\xB6rld"),
            (std::vector<int64_t>{2, id("hello"), id("\xE2\x96\x81w"), 4 + 0xC3, 4 + 0xB6, id("r"),
                                  id("ld")}));
  EXPECT_EQ(t.Encode("hello", false), std::vector<int64_t>{id("hello")});
  EXPECT_EQ(t.Decode(t.Encode("hello w\xC3\xB6rld", false)), "hello w\xC3\xB6rld");
  EXPECT_EQ(t.Decode(t.Encode("hello w\xC3\xB6rld")), "<bos>hello w\xC3\xB6rld");
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_EQ(t.eos_id(), -1);       // the template has none, and there is no tokenizer_config.json
  EXPECT_EQ(t.vocab_size(), 277);  // 276 pieces and <end_of_turn>
  // A lone byte-fallback token that is not UTF-8 decodes to U+FFFD, one per byte.
  EXPECT_EQ(t.Decode({4 + 0xC3, id("h"), 4 + 0xE6, 4 + 0x97}),
            "\xEF\xBF\xBDh\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(t.Decode({999999, -5, id("h")}), "h");  // ids that name no token are skipped

  // Without <0xE6>, a CJK char cannot be spelt in bytes: it is <unk>, and unks fuse.
  j["model"]["vocab"]["<0xE6>_gone"] = j["model"]["vocab"]["<0xE6>"];
  j["model"]["vocab"].erase("<0xE6>");
  const Tokenizer no_e6 = Load(j);
  EXPECT_EQ(no_e6.Encode("h\xE6\x97\xA5\xE6\x9C\xAC", false), (std::vector<int64_t>{id("h"), 3}));
  j["model"]["fuse_unk"] = false;
  EXPECT_EQ(Load(j).Encode("h\xE6\x97\xA5\xE6\x9C\xAC", false),
            (std::vector<int64_t>{id("h"), 3, 3}));
}

TEST_F(TokenizerJson, AddedTokensAreSplitOutOfTheText) {
  json j = SentencePieceStyle();
  const Tokenizer t = Load(j);
  const int64_t eot = t.vocab_size() - 1;
  const int64_t hello = Id(j, "hello");
  // Written literally in the input, a special token is that token; each side is its own word.
  EXPECT_EQ(t.Encode("hello<end_of_turn>hello", false), (std::vector<int64_t>{hello, eot, hello}));
  EXPECT_EQ(t.Encode("<bos>hello"), (std::vector<int64_t>{2, 2, hello}));
  EXPECT_EQ(t.Encode("<end_of_turn", false).size(), 12u);  // not the token: "<" "e" "n" ... bytes
  EXPECT_EQ(t.Decode({hello, eot}), "hello<end_of_turn>");

  // lstrip/rstrip swallow the spaces beside the token; single_word needs word boundaries.
  j["added_tokens"][4]["lstrip"] = true;
  j["added_tokens"][4]["rstrip"] = true;
  EXPECT_EQ(Load(j).Encode("hello  <end_of_turn> hello", false),
            (std::vector<int64_t>{hello, eot, hello}));
  j["added_tokens"][4]["single_word"] = true;
  EXPECT_EQ(Load(j).Encode("hello<end_of_turn>", false).back(), 4 + '>');
  EXPECT_EQ(Load(j).Encode("o <end_of_turn>", false).back(), eot);
}

TEST_F(TokenizerJson, ByteLevelRoundTripsAnyText) {
  // The 256 byte-level chars (GPT-2's bytes_to_unicode) and a few merges, Llama 3's structure.
  json vocab = json::object();
  int next = 0;
  std::vector<std::string> of_byte(256);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const int cp = keep ? b : 0x100 + extra++;
    std::string s;
    if (cp < 0x80) {
      s = std::string(1, static_cast<char>(cp));
    } else {
      s = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
    of_byte[b] = s;
    vocab[s] = next++;
  }
  const std::string sp = of_byte[' '];  // "Ġ"
  vocab[sp + "t"] = next++;
  vocab[sp + "th"] = next++;
  vocab["he"] = next++;
  // The piece "\u180E\u180E!" as one token (ignore_merges takes it whole).
  std::string mongolian;
  for (unsigned char b : std::string("\xE1\xA0\x8E\xE1\xA0\x8E!")) mongolian += of_byte[b];
  const int mongolian_id = next;
  vocab[mongolian] = next++;
  const json j = {
      {"added_tokens", json::array({{{"id", next},
                                     {"content", "<|begin_of_text|>"},
                                     {"special", true},
                                     {"normalized", false}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array({{{"type", "Split"},
                       {"pattern",
                        {{"Regex",
                          "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                          "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
                       {"behavior", "Isolated"},
                       {"invert", false}},
                      {{"type", "ByteLevel"},
                       {"add_prefix_space", false},
                       {"trim_offsets", true},
                       {"use_regex", false}}})}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens",
         {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", json::array({next})}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"ignore_merges", true},
        {"vocab", vocab},
        {"merges", json::array({json::array({sp, "t"}), json::array({sp + "t", "h"}),
                                json::array({"h", "e"})})}}}};
  const Tokenizer t = Load(j);
  EXPECT_EQ(t.bos_id(), next);
  EXPECT_EQ(t.Encode(" the", false),
            (std::vector<int64_t>{vocab[sp + "th"].get<int>(), vocab["e"].get<int>()}));
  for (const std::string& s : std::vector<std::string>{
           "Hello world! It's 12345 tokens.\n\n  h\xC3\xA9llo \xF0\x9F\x98\x80",
           std::string("\0\x01", 2), "tab\t\tx  \n \n  y",
           "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E x'\xC5\xBFt"}) {
    const auto ids = t.Encode(s);
    EXPECT_EQ(ids[0], next);
    EXPECT_EQ(t.Decode(std::vector<int64_t>(ids.begin() + 1, ids.end())), s);
  }
  // The digits go 3 by 3 (\p{N}{1,3}), U+180E is no space (PCRE2 alone would say it is).
  EXPECT_EQ(t.Encode("12345", false).size(), 5u);
  EXPECT_EQ(t.Encode("a\xE1\xA0\x8E\xE1\xA0\x8E!", false),
            (std::vector<int64_t>{vocab["a"].get<int>(), mongolian_id}));
  EXPECT_EQ(t.Decode({mongolian_id}), "\xE1\xA0\x8E\xE1\xA0\x8E!");
  // Invalid UTF-8 in the input is read as U+FFFD, as a Rust str would hold it.
  EXPECT_EQ(t.Decode(t.Encode("a\xFF"
                              "b",
                              false)),
            "a\xEF\xBF\xBD"
            "b");
  // A byte-level token that ends mid-character decodes lossily.
  EXPECT_EQ(t.Decode({vocab[of_byte[0xC3]].get<int>()}), "\xEF\xBF\xBD");

  // Encoding from several threads at once gives the same ids.
  const std::string text = "The theme of the thesis: 1234567, \xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80\n";
  const auto want = t.Encode(text);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) bad += t.Encode(text) != want;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_F(TokenizerJson, DirectoryPrefersTokenizerJsonAndReadsTheConfig) {
  json j = SentencePieceStyle();
  Write("model/tokenizer.json", j);
  fs::copy_file(kSource + "/examples/llama-mini/tokenizer.model", dir_ / "model/tokenizer.model");
  Tokenizer t = Tokenizer::Load((dir_ / "model").string()).value();
  EXPECT_EQ(t.vocab_size(), 277);  // the tokenizer.json, not the 4096-piece tokenizer.model
  EXPECT_EQ(t.pad_id(), 0);
  EXPECT_EQ(t.eos_id(), -1);

  // tokenizer_config.json names EOS and PAD; Gemma's class rebuilds the template from
  // add_bos_token/add_eos_token as transformers' GemmaTokenizerFast does.
  Write("model/tokenizer_config.json",
        json{{"tokenizer_class", "GemmaTokenizer"},
             {"bos_token", "<bos>"},
             {"eos_token", {{"content", "<eos>"}, {"special", true}}},
             {"pad_token", "<unk>"},
             {"add_eos_token", true},
             {"clean_up_tokenization_spaces", true}});
  t = Tokenizer::Load((dir_ / "model").string()).value();
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_EQ(t.pad_id(), 3);
  const int64_t hello = Id(j, "hello");
  EXPECT_EQ(t.Encode("hello"), (std::vector<int64_t>{2, hello, 1}));
  EXPECT_EQ(t.EncodeToLength("hello", 5), (std::vector<int64_t>{2, hello, 1, 3, 3}));
  EXPECT_EQ(t.EncodeToLength("hello hello hello", 2), (std::vector<int64_t>{2, hello}));
  // clean_up_tokenization_spaces: transformers' decode() drops the space before punctuation.
  EXPECT_EQ(t.Decode(t.Encode("hello , w", false)), "hello, w");

  // A BOS the vocabulary lacks would be a new token to transformers: refused.
  Write("model/tokenizer_config.json", json{{"bos_token", "<s>"}});
  EXPECT_NE(RefusalOf((dir_ / "model").string()).find("bos_token"), std::string::npos);
  // So is a token in added_tokens_decoder or additional_special_tokens that the file lacks.
  Write("model/tokenizer_config.json",
        json{{"added_tokens_decoder", {{"300", {{"content", "<new>"}, {"special", true}}}}}});
  EXPECT_NE(RefusalOf((dir_ / "model").string()).find("added_tokens_decoder[\"300\"]"),
            std::string::npos);
  Write("model/tokenizer_config.json", json{{"additional_special_tokens", {"<eos>", "<new>"}}});
  EXPECT_NE(RefusalOf((dir_ / "model").string()).find("additional_special_tokens"),
            std::string::npos);
  // A bare tokenizer.json path works too; a missing one is NotFound.
  EXPECT_TRUE(Tokenizer::Load(Write("other.json", j)).ok());
  EXPECT_EQ(Tokenizer::Load((dir_ / "none.json").string()).status().code(), StatusCode::kNotFound);
}

TEST_F(TokenizerJson, EncodeToLengthTokenizesABoundedPrefix) {
  const Tokenizer t = Load(SentencePieceStyle());
  std::string huge;
  for (int i = 0; i < 200000; ++i) huge += "hello world ";
  const auto full = t.Encode(huge);
  const auto cut = t.EncodeToLength(huge, 64);
  EXPECT_EQ(cut, std::vector<int64_t>(full.begin(), full.begin() + 64));
}

TEST_F(TokenizerJson, RefusesWhatItDoesNotImplement) {
  json j = SentencePieceStyle();
  const auto refused = [&](const std::function<void(json&)>& edit, const std::string& field,
                           const std::string& what) { ExpectRefused(j, edit, field, what); };
  refused([](json& k) { k["model"]["type"] = "WordPiece"; }, "model.type", "WordPiece");
  refused([](json& k) { k["model"]["type"] = "Unigram"; }, "model.type", "not supported");
  refused([](json& k) { k["model"]["dropout"] = 0.1; }, "model.dropout", "not supported");
  refused([](json& k) { k["model"]["continuing_subword_prefix"] = "##"; },
          "model.continuing_subword_prefix", "not supported");
  refused(
      [](json& k) {
        k["normalizer"] = {{"type", "Lowercase"}};
      },
      "normalizer.type", "Lowercase");
  refused(
      [](json& k) {
        k["normalizer"] = {{"type", "Sequence"},
                           {"normalizers", json::array({k["normalizer"], {{"type", "Strip"}}})}};
      },
      "normalizer.normalizers[1].type", "Strip");
  refused(
      [](json& k) {
        k["pre_tokenizer"] = {{"type", "Whitespace"}};
      },
      "pre_tokenizer.type", "Whitespace");
  refused(
      [](json& k) {
        k["post_processor"] = {{"type", "BertProcessing"}};
      },
      "post_processor.type", "BertProcessing");
  refused([](json& k) { k["decoder"] = {{"type", "WordPiece"}}; }, "decoder.type", "WordPiece");
  refused(
      [](json& k) {
        k["pre_tokenizer"] = {
            {"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}};
      },
      "pre_tokenizer.pattern.Regex", "\\w");
  refused(
      [](json& k) {
        k["pre_tokenizer"] = {{"type", "Split"},
                              {"pattern", {{"Regex", "[a-z&&[^aeiou]]"}}},
                              {"behavior", "Isolated"}};
      },
      "pre_tokenizer.pattern.Regex", "not supported");
  // Constructs whose meaning differs between Oniguruma (tokenizers) and PCRE2: script
  // properties, multi-char case folding.
  for (const char* re : {"\\p{Han}+", "(?i:ss|t)", "\\pL"}) {
    refused(
        [&](json& k) {
          k["pre_tokenizer"] = {
              {"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}};
        },
        "pre_tokenizer.pattern.Regex", "not supported");
  }
  refused([](json& k) { k["version"] = "2.0"; }, "version", "not supported");
}

TEST_F(TokenizerJson, MalformedFilesGiveClearErrors) {
  json j = SentencePieceStyle();
  const auto bad = [&](const std::function<void(json&)>& edit, const std::string& field,
                       const std::string& what) { ExpectRefused(j, edit, field, what); };
  EXPECT_NE(RefusalOf(Write("broken.json", std::string("{\"model\": {\"vocab\": "))).find("JSON"),
            std::string::npos);
  bad([](json& k) { k["model"]["merges"][2] = "he ll o"; }, "model.merges[2]", "2 parts");
  bad([](json& k) { k["model"]["merges"][2] = "hell"; }, "model.merges[2]", "2 parts");
  bad([](json& k) { k["model"]["merges"][0] = "l o"; }, "model.merges[0]",
      "\"lo\" is not in model.vocab");
  bad([](json& k) { k["model"]["merges"][1] = "q x"; }, "model.merges[1]", "\"q\"");
  bad([](json& k) { k["model"]["merges"][1] = json::array({"l"}); }, "model.merges[1]",
      "pair of strings");
  bad(
      [](json& k) {
        k["model"]["merges"][1] = json::array({"l", "l"});
      },
      "model.merges[1]", "among");
  bad([](json& k) { k["model"]["vocab"]["h"] = -1; }, "model.vocab[\"h\"]", "[0, 2^31)");
  bad([](json& k) { k["model"]["vocab"]["h"] = "seven"; }, "model.vocab[\"h\"]", "[0, 2^31)");
  bad([](json& k) { k["model"]["vocab"]["h"] = 5; }, "model.vocab", "given to both");
  bad([](json& k) { k["model"]["vocab"]["ld"] = 1 << 30; }, "model.vocab", "out of range");
  bad([](json& k) { k["model"]["vocab"] = json::array(); }, "model.vocab", "expected an object");
  bad([](json& k) { k["model"]["unk_token"] = "<nope>"; }, "model.unk_token", "not in");
  bad([](json& k) { k["added_tokens"][4]["id"] = 9999; }, "added_tokens[4].id",
      "tokenizers gives it id 276");
  bad([](json& k) { k["added_tokens"][2]["id"] = 7; }, "added_tokens[2].id", "gives it id 2");
  bad([](json& k) { k["added_tokens"][1]["content"] = "<pad>"; }, "added_tokens[1].content",
      "added twice");
  bad([](json& k) { k["post_processor"]["special_tokens"] = json::object(); },
      "post_processor.single[0]", "missing from special_tokens");
  bad([](json& k) { k["post_processor"]["special_tokens"]["<bos>"]["ids"] = {77777}; },
      "post_processor", "names no token");
  bad(
      [](json& k) {
        k["normalizer"]["pattern"] = {{"Regex", "(unclosed"}};
      },
      "normalizer.pattern.Regex", "PCRE2");
  bad([](json& k) { k.erase("model"); }, "model", "missing");
  bad(
      [](json& k) {
        for (int i = 0; i < 40; ++i) {
          k["decoder"] = {{"type", "Sequence"}, {"decoders", json::array({k["decoder"]})}};
        }
      },
      "decoder.decoders[0]", "nested too deeply");
  bad([](json& k) { k["decoder"]["decoders"][1] = 3; }, "decoder.decoders[1]",
      "expected an object");
}

}  // namespace
}  // namespace moreh::data
