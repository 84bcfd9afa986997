// Tokenizer, datasets and the DataLoader, on the shipped tokenizer and data.
#include "runtime/data/dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

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
