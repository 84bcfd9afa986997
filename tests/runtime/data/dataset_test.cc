// Tokenizer, datasets and the DataLoader, on the shipped tokenizer and data.
#include "runtime/data/dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "tests/test_util.h"

namespace moreh::data {
namespace {
namespace fs = std::filesystem;

const std::string kSource = MOREH_SOURCE_DIR;
const std::string kModelDir = kSource + "/examples/llama-mini";
const std::string kData = kSource + "/examples/data/man_summaries.jsonl";

std::string TempFile(const std::string& name, const std::string& content) {
  const fs::path p =
      fs::temp_directory_path() / ("moreh_data_" + std::to_string(::getpid()) + name);
  std::ofstream(p) << content;
  return p.string();
}

TEST(Tokenizer, AddsBosPadsAndTruncates) {
  const Tokenizer tok = Tokenizer::Load(kModelDir).value();
  EXPECT_EQ(tok.vocab_size(), 4096);
  EXPECT_EQ(tok.bos_id(), 1);
  const std::vector<int64_t> ids = tok.Encode("list directory contents");
  ASSERT_GT(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok.Decode(ids), "list directory contents");
  const auto padded = tok.EncodeToLength("list directory contents", 16);
  EXPECT_EQ(padded.size(), 16u);
  EXPECT_EQ(std::vector<int64_t>(padded.begin(), padded.begin() + ids.size()), ids);
  EXPECT_EQ(padded.back(), tok.pad_id());
  EXPECT_EQ(tok.EncodeToLength("list directory contents", 2),
            std::vector<int64_t>(ids.begin(), ids.begin() + 2));
  // The prompt tags are single pieces.
  EXPECT_LE(tok.Encode("[SUMMARIZE]", false).size(), 2u);  // at most the word-start marker + tag
  EXPECT_EQ(Tokenizer::Load("/nonexistent-dir").status().code(), StatusCode::kNotFound);
  const std::string junk = TempFile("junk.model", "not a model");
  EXPECT_NE(Tokenizer::Load(junk).status().message().find("not a SentencePiece model"),
            std::string::npos);
  fs::remove(junk);
}

TEST(Dataset, ReadsTheShippedDataAndMapsPrompts) {
  const auto records = ReadJsonl(kData, {"article", "highlights"}).value();
  EXPECT_GE(records.size(), 2000u);
  const std::string p = SummarizationPrompt(records[0]);
  EXPECT_EQ(p.rfind("[SUMMARIZE] ", 0), 0u);
  EXPECT_NE(p.find(" [/SUMMARIZE]\n" + records[0].at("highlights")), std::string::npos);
  const Tokenizer tok = Tokenizer::Load(kModelDir).value();
  const std::vector<Record> few(records.begin(), records.begin() + 10);
  const auto d =
      TokenizeRecords(few, tok, 64, [](const Record& r) { return SummarizationPrompt(r); }).value();
  ASSERT_EQ(d.examples.size(), 10u);
  for (const auto& ex : d.examples) {
    EXPECT_EQ(ex.size(), 64u);
    EXPECT_EQ(ex[0], tok.bos_id());
  }
}

TEST(Dataset, BadFilesNameTheFileLineAndProblem) {
  const auto fields = std::vector<std::string>{"article", "highlights"};
  const std::string f1 =
      TempFile("a.jsonl", "{\"article\": \"x\", \"highlights\": \"y\"}\nnot json\n");
  EXPECT_NE(ReadJsonl(f1, fields).status().message().find(f1 + ":2: not a JSON object"),
            std::string::npos);
  const std::string f2 = TempFile("b.jsonl", "\n{\"article\": \"x\"}\n");
  EXPECT_NE(ReadJsonl(f2, fields).status().message().find(":2: missing field 'highlights'"),
            std::string::npos);
  const std::string f3 = TempFile("c.jsonl", "{\"article\": 3, \"highlights\": \"y\"}\n");
  EXPECT_NE(ReadJsonl(f3, fields).status().message().find("'article' is not a string"),
            std::string::npos);
  const std::string f4 = TempFile("d.jsonl", "\n\n");
  EXPECT_NE(ReadJsonl(f4, fields).status().message().find("the dataset is empty"),
            std::string::npos);
  EXPECT_EQ(ReadJsonl("/nonexistent.jsonl", fields).status().code(), StatusCode::kNotFound);
  const Tokenizer tok = Tokenizer::Load(kModelDir).value();
  const std::vector<Record> one{{{"article", "a"}, {"highlights", "b"}}};
  auto bad_block =
      TokenizeRecords(one, tok, 0, [](const Record& r) { return SummarizationPrompt(r); });
  EXPECT_NE(bad_block.status().message().find("block size must be positive"), std::string::npos);
  EXPECT_FALSE(TokenizeTextFile(f4, tok, 16).ok());
  for (const auto& f : {f1, f2, f3, f4}) fs::remove(f);
}

// The probe's findings: a 50 MB line was accepted and cost 110x its size; invalid UTF-8 was
// reported as "not a JSON object".
TEST(Dataset, ALineOverTheLimitIsRefusedWithoutReadingItWhole) {
  const auto fields = std::vector<std::string>{"article", "highlights"};
  const std::string ok = "{\"article\": \"x\", \"highlights\": \"y\"}\n";
  const std::string long_line =
      "{\"article\": \"" + std::string(3 << 20, 'a') + "\", \"highlights\": \"y\"}\n";
  const std::string f = TempFile("long.jsonl", ok + long_line + ok);
  const std::string m = ReadJsonl(f, fields, 1 << 20).status().message();
  EXPECT_NE(m.find(f + ":2: the line is longer than 1048576 bytes"), std::string::npos) << m;
  EXPECT_NE(m.find("--max-line-bytes"), std::string::npos) << m;
  // Under a larger limit the same file reads, every line whole.
  auto all = ReadJsonl(f, fields, 8 << 20);
  ASSERT_TRUE(all.ok()) << all.status().message();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[1].at("article").size(), size_t{3} << 20);
  // A line of exactly the read buffer's size and one just over it (the chunked reader's edges).
  for (size_t n : {65535u - 40, 65536u - 40, 65537u - 40, 131072u}) {
    const std::string edge =
        "{\"article\": \"" + std::string(n, 'b') + "\", \"highlights\": \"z\"}";
    const std::string g = TempFile("edge.jsonl", edge + "\n" + ok);
    auto r = ReadJsonl(g, fields, 1 << 20);
    ASSERT_TRUE(r.ok()) << n << ": " << r.status().message();
    EXPECT_EQ((*r)[0].at("article").size(), n);
    EXPECT_EQ((*r)[1].at("article"), "x");
    fs::remove(g);
  }
  // The limit from the environment, and a malformed one named.
  setenv("MOREH_MAX_LINE_BYTES", "1M", 1);
  EXPECT_NE(ReadJsonl(f, fields).status().message().find("longer than 1048576"), std::string::npos);
  setenv("MOREH_MAX_LINE_BYTES", "lots", 1);
  EXPECT_NE(ReadJsonl(f, fields).status().message().find("MOREH_MAX_LINE_BYTES='lots'"),
            std::string::npos);
  unsetenv("MOREH_MAX_LINE_BYTES");
  fs::remove(f);
}

TEST(Dataset, InvalidUtf8IsNamedWithTheLine) {
  const auto fields = std::vector<std::string>{"article", "highlights"};
  const std::string f = TempFile("utf8.jsonl",
                                 "{\"article\": \"caf\xc3\xa9\", \"highlights\": \"y\"}\n"
                                 "{\"article\": \"ab\xff\", \"highlights\": \"y\"}\n");
  const std::string m = ReadJsonl(f, fields).status().message();
  EXPECT_NE(m.find(f + ":2: not valid UTF-8 (byte 16 of the line, 0xff)"), std::string::npos) << m;
  fs::remove(f);
  EXPECT_EQ(FirstInvalidUtf8("plain"), -1);
  EXPECT_EQ(FirstInvalidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), -1);  // é € 😀
  EXPECT_EQ(FirstInvalidUtf8("a\xc0\xaf"), 1);                                   // overlong '/'
  EXPECT_EQ(FirstInvalidUtf8("ab\xed\xa0\x80"), 2);                              // a surrogate
  EXPECT_EQ(FirstInvalidUtf8("\xf4\x90\x80\x80"), 0);                            // past U+10FFFF
  EXPECT_EQ(FirstInvalidUtf8("x\xe2\x82"), 1);                                   // cut short
  EXPECT_EQ(FirstInvalidUtf8("x\x80"), 1);  // a lone continuation byte
}

// Tokenizing a record costs what its block needs: only the prefix that can reach the block is
// tokenized, and the ids are those of the whole text.
TEST(Tokenizer, EncodeToLengthIsBoundedByTheBlockAndExact) {
  const Tokenizer tok = Tokenizer::Load(kModelDir).value();
  const auto records = ReadJsonl(kData, {"article", "highlights"}).value();
  std::string text;
  for (size_t i = 0; i < records.size() && text.size() < 400000; ++i) {
    text += SummarizationPrompt(records[i]) + "\n";
  }
  for (int64_t block : {16, 128, 1024}) {
    std::vector<int64_t> whole = tok.Encode(text);
    whole.resize(static_cast<size_t>(block));
    EXPECT_EQ(tok.EncodeToLength(text, block), whole) << "block " << block;
  }
  // A 50 MB record, as in the probe: quick, as only its start is tokenized.
  std::string huge;
  while (huge.size() < (size_t{50} << 20)) huge += text;
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.EncodeToLength(huge, 1024);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ids.size(), 1024u);
  EXPECT_LT(s, 5.0) << "tokenizing the start of a 50 MB record took " << s << " s";
}

TEST(DataLoader, BatchesShufflesReproduciblyAndKeepsTheLastPartialBatch) {
  TokenizedDataset d;
  d.block_size = 3;
  for (int64_t i = 0; i < 10; ++i) d.examples.push_back({i, i, 0});
  DataLoader ordered(&d, 4, /*shuffle=*/false, 0);
  EXPECT_EQ(ordered.size(), 3);
  EXPECT_EQ(ordered.Batch(2).shape(), Shape({2, 3}));
  EXPECT_EQ(ordered.Batch(0).to_floats()[3], 1.0f);
  auto firsts = [](DataLoader& l) {
    std::vector<float> v;
    for (int64_t b = 0; b < l.size(); ++b) {
      const auto x = l.Batch(b).to_floats();
      for (size_t i = 0; i < x.size(); i += 3) v.push_back(x[i]);
    }
    return v;
  };
  DataLoader s1(&d, 4, true, 7), s2(&d, 4, true, 7);
  const auto e0 = firsts(s1);
  EXPECT_EQ(e0, firsts(s2));                                     // same seed, same order
  EXPECT_EQ(std::set<float>(e0.begin(), e0.end()).size(), 10u);  // a permutation
  s1.set_epoch(1);
  EXPECT_NE(firsts(s1), e0);  // another epoch, another order
  const Tensor ids = Tensor::FromVector<int64_t>({1, 5, 0, 0}, {1, 4});
  EXPECT_EQ(CreateMask(ids, 0).to_floats(), std::vector<float>({1, 1, 0, 0}));
  EXPECT_EQ(MaskPads(ids, 0).to_floats(), std::vector<float>({1, 5, -100, -100}));
  EXPECT_ERROR_MENTIONS(DataLoader(&d, 0, false, 0), "batch size");
}

}  // namespace
}  // namespace moreh::data
