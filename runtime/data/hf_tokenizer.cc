#include "runtime/data/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#ifdef MOREH_WITH_ICU
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uniset.h>
#endif

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <utility>

namespace moreh::data {
namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8

// The length of the well-formed UTF-8 sequence at s[i], or 0 (Rust's str rules: no overlongs, no
// surrogates, nothing past U+10FFFF).
// A multi-byte sequence's lead byte c: its length and the range its second byte must lie in
// (which excludes overlongs, surrogates and code points past U+10FFFF); false for a byte that
// cannot lead one.
bool LeadByte(unsigned char c, size_t* len, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    *len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    *len = 3;
    if (c == 0xE0) *lo = 0xA0;
    if (c == 0xED) *hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    *len = 4;
    if (c == 0xF0) *lo = 0x90;
    if (c == 0xF4) *hi = 0x8F;
  } else {
    return false;
  }
  return true;
}

size_t WellFormedLen(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t len;
  unsigned char lo, hi;
  if (!LeadByte(c, &len, &lo, &hi)) return 0;
  if (i + len > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
  }
  return len;
}

// How many bytes at s[i] (not well-formed) one U+FFFD replaces: the maximal prefix of a valid
// sequence, at least one byte (what Rust's String::from_utf8_lossy does).
size_t InvalidRunLen(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t len;
  unsigned char lo, hi;
  if (!LeadByte(c, &len, &lo, &hi)) return 1;
  if (i + 1 >= s.size() || b(i + 1) < lo || b(i + 1) > hi) return 1;
  size_t k = 2;
  while (k < len && i + k < s.size() && (b(i + k) & 0xC0) == 0x80) ++k;
  return k;
}

bool IsWellFormed(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = WellFormedLen(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

std::string Utf8Lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = WellFormedLen(s, i);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out.append(kReplacementChar);
      i += InvalidRunLen(s, i);
    }
  }
  return out;
}

// The code point at s[i] of well-formed UTF-8; advances i.
char32_t NextChar(std::string_view s, size_t& i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) {
    ++i;
    return c;
  }
  if (c < 0xE0) {
    const char32_t cp = ((c & 0x1F) << 6) | (b(i + 1) & 0x3F);
    i += 2;
    return cp;
  }
  if (c < 0xF0) {
    const char32_t cp = ((c & 0x0F) << 12) | ((b(i + 1) & 0x3F) << 6) | (b(i + 2) & 0x3F);
    i += 3;
    return cp;
  }
  const char32_t cp =
      ((c & 0x07) << 18) | ((b(i + 1) & 0x3F) << 12) | ((b(i + 2) & 0x3F) << 6) | (b(i + 3) & 0x3F);
  i += 4;
  return cp;
}

size_t CharLen(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

void AppendUtf8(std::string* out, char32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Unicode White_Space, the set Rust's char::is_whitespace and tokenizers' `\s` use.
bool IsWhiteSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}
// The same set as a PCRE2 class body: PCRE2's own `\s` also takes U+180E, which Oniguruma does not.
constexpr std::string_view kWhiteSpaceClass =
    "\\t\\n\\x0B\\f\\r\\x20\\x85\\xA0\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

// ---------------------------------------------------------------------------------------------
// The byte-level alphabet (GPT-2's bytes_to_unicode): printable bytes stand for themselves, the
// other 68 map to U+0100.. in byte order, so every byte has a visible one-char token.

struct ByteAlphabet {
  std::array<std::string, 256> utf8;        // byte -> its char, UTF-8
  std::array<int16_t, 0x144> byte_of_cp{};  // char -> byte, -1 when not in the alphabet
  ByteAlphabet() {
    byte_of_cp.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = keep ? b : 0x100 + next++;
      AppendUtf8(&utf8[b], cp);
      byte_of_cp[cp] = static_cast<int16_t>(b);
    }
  }
  int ByteOf(char32_t cp) const { return cp < byte_of_cp.size() ? byte_of_cp[cp] : -1; }
};

const ByteAlphabet& Bytes() {
  static const ByteAlphabet a;
  return a;
}

// ---------------------------------------------------------------------------------------------
// Regular expressions: tokenizers compiles its patterns with Oniguruma (Ruby syntax); this is
// PCRE2 after a translation that keeps the constructs whose meaning is the same in both and
// refuses the others.

// The general categories, the only \p{...} checked to mean the same in both (PCRE2 takes a bare
// script name as Script_Extensions, Oniguruma as Script).
bool IsGeneralCategory(std::string_view name) {
  static constexpr std::string_view kNames[] = {
      "L",  "Lu", "Ll", "Lt", "Lm", "Lo", "M",  "Mn", "Mc", "Me", "N",  "Nd",
      "Nl", "No", "P",  "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "S",  "Sm",
      "Sc", "Sk", "So", "Z",  "Zs", "Zl", "Zp", "C",  "Cc", "Cf", "Co", "Cn"};
  if (name.starts_with("^")) name.remove_prefix(1);
  return std::find(std::begin(kNames), std::end(kNames), name) != std::end(kNames);
}

StatusOr<std::string> OnigToPcre2(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  size_t class_body = 0;  // where the current class's first member starts
  // Oniguruma folds case to several chars ("ss" matches "ß", "fi" matches "ﬁ"), PCRE2 to one:
  // a caseless pattern may have neither such a pair of letters nor any non-ASCII char.
  const bool caseless = p.find("(?i") != std::string_view::npos;
  char prev_letter = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (caseless) {
      if (static_cast<unsigned char>(c) >= 0x80) {
        return Status::InvalidArgument("a non-ASCII char in a case-insensitive pattern");
      }
      const bool letter =
          std::isalpha(static_cast<unsigned char>(c)) && (i == 0 || p[i - 1] != '\\');
      if (letter && prev_letter != 0 && !in_class) {
        const std::string pair = {static_cast<char>(std::tolower(prev_letter)),
                                  static_cast<char>(std::tolower(c))};
        if (pair == "ss" || pair == "st" || pair == "ff" || pair == "fi" || pair == "fl") {
          return Status::InvalidArgument("\"" + pair + "\" in a case-insensitive pattern");
        }
      }
      prev_letter = letter && !in_class ? c : 0;
    }
    if (c == '\\') {
      if (i + 1 >= p.size()) return Status::InvalidArgument("the pattern ends in a backslash");
      const char d = p[++i];
      if (d == 'p' || d == 'P') {
        const size_t close = p.find('}', i);
        if (i + 1 >= p.size() || p[i + 1] != '{' || close == std::string_view::npos) {
          return Status::InvalidArgument(std::string("\\") + d + " without {...}");
        }
        if (!IsGeneralCategory(p.substr(i + 2, close - i - 2))) {
          return Status::InvalidArgument(std::string("unsupported property \\") + d +
                                         std::string(p.substr(i + 1, close - i)) +
                                         " (only general categories such as \\p{L})");
        }
        out += p.substr(i - 1, close - i + 2);
        i = close;
        continue;
      }
      if (d == 'x' && caseless) {
        return Status::InvalidArgument("\\x in a case-insensitive pattern");
      }
      if (d == 's') {
        if (in_class) {
          out += kWhiteSpaceClass;
        } else {
          out += "[";
          out += kWhiteSpaceClass;
          out += "]";
        }
      } else if (d == 'S') {
        if (in_class) return Status::InvalidArgument("\\S inside a character class");
        out += "[^";
        out += kWhiteSpaceClass;
        out += "]";
      } else if (d == 'v') {
        out += "\\x0B";  // Oniguruma's \v is VT; PCRE2's is a class of vertical spaces
      } else if (std::strchr("dDxnrtfae0123456789AzZ", d) != nullptr) {
        out += '\\';
        out += d;
      } else if (std::isalnum(static_cast<unsigned char>(d))) {
        // \w, \b, \h, \R, \X, \k ...: not the same (or not verified the same) in the two engines.
        return Status::InvalidArgument(std::string("unsupported escape \\") + d);
      } else {
        out += '\\';
        out += d;
      }
      continue;
    }
    if (in_class) {
      if (c == '[') return Status::InvalidArgument("a nested or POSIX class inside [...]");
      if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') {
        return Status::InvalidArgument("class intersection &&");
      }
      if (c == ']' && i > class_body) in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      class_body = i + 1;
      continue;
    }
    if (c == '{' && i + 1 < p.size() && p[i + 1] == ',') {
      return Status::InvalidArgument("the quantifier {,n}");
    }
    if (c == '(' && i + 1 < p.size() && p[i + 1] == '?') {
      const std::string_view rest = p.substr(i + 2);
      const bool ok = rest.starts_with(":") || rest.starts_with("=") || rest.starts_with("!") ||
                      rest.starts_with(">") || rest.starts_with("<=") || rest.starts_with("<!") ||
                      rest.starts_with("i:") || rest.starts_with("i)") || rest.starts_with("-i:") ||
                      rest.starts_with("-i)");
      if (!ok)
        return Status::InvalidArgument("unsupported group (?" + std::string(rest.substr(0, 2)));
    }
    out += c;
  }
  if (in_class) return Status::InvalidArgument("an unterminated character class");
  return out;
}

class Regex {
 public:
  static StatusOr<std::shared_ptr<const Regex>> Compile(std::string_view onig_pattern) {
    auto translated = OnigToPcre2(onig_pattern);
    if (!translated.ok()) return translated.status();
    return CompilePcre2(translated.value());
  }
  static StatusOr<std::shared_ptr<const Regex>> CompilePcre2(const std::string& pat) {
    pcre2_compile_context* cc = pcre2_compile_context_create(nullptr);
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int err = 0;
    PCRE2_SIZE err_off = 0;
    // Oniguruma's ^ and $ are line anchors; UCP gives \d and \p Unicode meanings.
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err, &err_off, cc);
    pcre2_compile_context_free(cc);
    if (code == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      return Status::InvalidArgument(
          "PCRE2 cannot compile it: " + std::string(reinterpret_cast<char*>(msg)) + " at offset " +
          std::to_string(err_off));
    }
    auto re = std::shared_ptr<Regex>(new Regex());
    re->code_ = code;
    re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    return std::shared_ptr<const Regex>(std::move(re));
  }
  ~Regex() { pcre2_code_free(code_); }

  // The non-overlapping matches in s, as the onig crate's find_iter walks them: an empty match
  // right where the previous match ended is skipped by advancing one char. `s` is well-formed.
  void FindAll(std::string_view s, std::vector<std::pair<size_t, size_t>>* out) const {
    out->clear();
    Scratch& t = ThreadScratch();
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t start = 0;
    std::optional<size_t> last_end;
    while (start <= s.size()) {
      int rc = pcre2_match(code_, subject, s.size(), start, PCRE2_NO_UTF_CHECK, t.data, t.context);
      if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && jit_) {
        // The JIT's stack ran out on a pathological input: the interpreter keeps its frames on
        // the heap.
        rc = pcre2_match(code_, subject, s.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, t.data,
                         t.context);
      }
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        throw Error("tokenizer regex failed on the input: " +
                    std::string(reinterpret_cast<char*>(msg)));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(t.data);
      const size_t ms = ov[0], me = ov[1];
      if (ms == me && last_end && *last_end == me) {
        if (start >= s.size()) break;
        start += CharLen(static_cast<unsigned char>(s[start]));
        continue;
      }
      out->emplace_back(ms, me);
      start = me;
      last_end = me;
    }
  }

 private:
  Regex() = default;
  struct Scratch {
    pcre2_match_data* data;
    pcre2_match_context* context;
    pcre2_jit_stack* stack;
    Scratch() {
      data = pcre2_match_data_create(1, nullptr);
      context = pcre2_match_context_create(nullptr);
      stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
      if (stack != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
    }
    ~Scratch() {
      pcre2_match_data_free(data);
      pcre2_match_context_free(context);
      if (stack != nullptr) pcre2_jit_stack_free(stack);
    }
  };
  static Scratch& ThreadScratch() {
    thread_local Scratch s;
    return s;
  }
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

// A Split or Replace pattern: {"String": s} (literal) or {"Regex": r}.
struct Pattern {
  std::string literal;
  std::shared_ptr<const Regex> regex;
  // (start, end, is_match) pieces covering s, as tokenizers' Pattern::find_matches gives them.
  void Pieces(std::string_view s, std::vector<std::tuple<size_t, size_t, bool>>* out) const {
    out->clear();
    if (s.empty()) {
      out->emplace_back(0, 0, false);
      return;
    }
    thread_local std::vector<std::pair<size_t, size_t>> matches;
    matches.clear();
    if (regex) {
      regex->FindAll(s, &matches);
    } else {
      size_t pos = 0;
      while ((pos = s.find(literal, pos)) != std::string_view::npos) {
        matches.emplace_back(pos, pos + literal.size());
        pos += literal.size();
      }
    }
    size_t prev = 0;
    for (const auto& [a, b] : matches) {
      if (prev != a) out->emplace_back(prev, a, false);
      out->emplace_back(a, b, true);
      prev = b;
    }
    if (prev != s.size()) out->emplace_back(prev, s.size(), false);
  }
  std::string Replace(std::string_view s, std::string_view content) const {
    thread_local std::vector<std::tuple<size_t, size_t, bool>> pieces;
    Pieces(s, &pieces);
    std::string out;
    out.reserve(s.size());
    for (const auto& [a, b, m] : pieces) {
      if (m) {
        out += content;
      } else {
        out += s.substr(a, b - a);
      }
    }
    return out;
  }
};

// ---------------------------------------------------------------------------------------------
// Normalizers

#ifdef MOREH_WITH_ICU
// tokenizers normalizes with Unicode 9.0's tables (its unicode-normalization-alignments crate):
// there a char assigned later has no decomposition and combining class 0. ICU's filtered
// normalizer passes the chars outside a set through untouched, as boundaries, which is the same.
// `which`: 0 NFC, 1 NFD, 2 NFKC, 3 NFKD.
const icu::Normalizer2* Unicode9Normalizer(int which) {
  static const std::array<const icu::Normalizer2*, 4> kNormalizers = [] {
    std::array<const icu::Normalizer2*, 4> out{};
    UErrorCode st = U_ZERO_ERROR;
    auto* set = new icu::UnicodeSet(icu::UnicodeString("[:age=9.0:]"), st);
    if (U_FAILURE(st)) return out;
    set->freeze();
    const icu::Normalizer2* base[4] = {
        icu::Normalizer2::getNFCInstance(st), icu::Normalizer2::getNFDInstance(st),
        icu::Normalizer2::getNFKCInstance(st), icu::Normalizer2::getNFKDInstance(st)};
    if (U_FAILURE(st)) return out;
    for (int k = 0; k < 4; ++k) out[k] = new icu::FilteredNormalizer2(*base[k], *set);  // leaked
    return out;
  }();
  return kNormalizers[which];
}
#endif

enum class NormKind { kUnicode, kReplace, kPrepend };  // kUnicode: NFC, NFD, NFKC or NFKD

struct Normalizer {
  NormKind kind;
  Pattern pattern;      // kReplace
  std::string content;  // kReplace: the replacement; kPrepend: the prefix
#ifdef MOREH_WITH_ICU
  const icu::Normalizer2* icu = nullptr;
#endif

  void Apply(std::string* s) const {
    switch (kind) {
      case NormKind::kReplace:
        *s = pattern.Replace(*s, content);
        return;
      case NormKind::kPrepend:
        if (!s->empty()) s->insert(0, content);
        return;
      case NormKind::kUnicode:
        break;
    }
    // Every Unicode normal form of ASCII text is the text.
    if (std::all_of(s->begin(), s->end(), [](char c) { return (c & 0x80) == 0; })) return;
#ifdef MOREH_WITH_ICU
    // ICU takes int32 lengths: a longer text goes in pieces cut before a char that normalization
    // never joins to what precedes it, so the pieces normalize as the whole would.
    constexpr size_t kPiece = size_t{1} << 26;
    std::string out;
    out.reserve(s->size());
    icu::StringByteSink<std::string> sink(&out);
    size_t pos = 0;
    while (pos < s->size()) {
      size_t end = s->size();
      if (end - pos > kPiece) {
        end = pos + kPiece;
        while (end < s->size()) {
          size_t i = end;
          while (i < s->size() && (static_cast<unsigned char>((*s)[i]) & 0xC0) == 0x80) ++i;
          end = i;
          if (end >= s->size()) break;
          size_t j = end;
          if (icu->hasBoundaryBefore(static_cast<UChar32>(NextChar(*s, j)))) break;
          end = j;
        }
      }
      UErrorCode status = U_ZERO_ERROR;
      icu->normalizeUTF8(0, icu::StringPiece(s->data() + pos, static_cast<int32_t>(end - pos)),
                         sink, nullptr, status);
      if (U_FAILURE(status)) {
        throw Error(std::string("ICU normalization failed: ") + u_errorName(status));
      }
      pos = end;
    }
    *s = std::move(out);
#endif
  }
};

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers. A piece is a string plus whether it starts at offset 0 of the original text
// (Metaspace's prepend_scheme "first" looks at that).

struct Piece {
  std::string text;
  bool at_start;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
enum class PrependScheme { kAlways, kFirst, kNever };
enum class PreKind { kSplit, kByteLevel, kMetaspace };

struct PreTokenizer {
  PreKind kind;
  // kSplit
  Pattern pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  // kByteLevel
  bool add_prefix_space = false;
  bool use_regex = true;
  std::shared_ptr<const Regex> gpt2;
  // kMetaspace
  std::string replacement;
  PrependScheme prepend = PrependScheme::kAlways;
  bool split = true;
};

// Splits `s` at the given (start, end, is_match) pieces by `behavior` (tokenizers'
// NormalizedString::split), appending the non-empty results to `out`.
void SplitBy(const Piece& in, std::vector<std::tuple<size_t, size_t, bool>>& m,
             SplitBehavior behavior, bool invert, std::vector<Piece>* out) {
  if (invert) {
    for (auto& t : m) std::get<2>(t) = !std::get<2>(t);
  }
  thread_local std::vector<std::pair<size_t, size_t>> spans;
  spans.clear();
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const auto& [a, b, is] : m) spans.emplace_back(a, b);
      break;
    case SplitBehavior::kRemoved:
      for (const auto& [a, b, is] : m) {
        if (!is) spans.emplace_back(a, b);
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const auto& [a, b, is] : m) {
        if (is && !prev_match && !spans.empty()) {
          spans.back().second = b;
        } else {
          spans.emplace_back(a, b);
        }
        prev_match = is;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_match = false;
      for (size_t k = m.size(); k-- > 0;) {
        const auto& [a, b, is] = m[k];
        if (is && !prev_match && !spans.empty()) {
          spans.back().first = a;
        } else {
          spans.emplace_back(a, b);
        }
        prev_match = is;
      }
      std::reverse(spans.begin(), spans.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool prev_match = false;
      for (const auto& [a, b, is] : m) {
        if (is == prev_match && !spans.empty()) {
          spans.back().second = b;
        } else {
          spans.emplace_back(a, b);
        }
        prev_match = is;
      }
      break;
    }
  }
  for (const auto& [a, b] : spans) {
    if (a == b) continue;
    out->push_back(Piece{in.text.substr(a, b - a), in.at_start && a == 0});
  }
}

void ApplyPreTokenizer(const PreTokenizer& p, std::vector<Piece>* pieces) {
  thread_local std::vector<std::tuple<size_t, size_t, bool>> m;
  std::vector<Piece> out;
  out.reserve(pieces->size() * 2);
  switch (p.kind) {
    case PreKind::kSplit:
      for (const Piece& in : *pieces) {
        p.pattern.Pieces(in.text, &m);
        SplitBy(in, m, p.behavior, p.invert, &out);
      }
      break;
    case PreKind::kByteLevel:
      for (Piece& in : *pieces) {
        if (p.add_prefix_space && !in.text.starts_with(' ')) in.text.insert(0, 1, ' ');
        if (p.use_regex) {
          Pattern re{"", p.gpt2};
          re.Pieces(in.text, &m);
          SplitBy(in, m, SplitBehavior::kIsolated, false, &out);
        } else {
          out.push_back(std::move(in));
        }
      }
      for (Piece& piece : out) {
        std::string mapped;
        mapped.reserve(piece.text.size() * 2);
        for (unsigned char b : piece.text) mapped += Bytes().utf8[b];
        piece.text = std::move(mapped);
      }
      break;
    case PreKind::kMetaspace:
      for (Piece& in : *pieces) {
        std::string s;
        s.reserve(in.text.size() + 8);
        for (char c : in.text) {
          if (c == ' ') {
            s += p.replacement;
          } else {
            s += c;
          }
        }
        const bool starts = s.starts_with(p.replacement);
        if ((p.prepend == PrependScheme::kAlways && !starts) ||
            (p.prepend == PrependScheme::kFirst && !starts && in.at_start)) {
          s.insert(0, p.replacement);
        }
        Piece ps{std::move(s), in.at_start};
        if (!p.split) {
          if (!ps.text.empty()) out.push_back(std::move(ps));
          continue;
        }
        Pattern lit{p.replacement, nullptr};
        lit.Pieces(ps.text, &m);
        SplitBy(ps, m, SplitBehavior::kMergedWithNext, false, &out);
      }
      break;
  }
  *pieces = std::move(out);
}

// ---------------------------------------------------------------------------------------------
// Added tokens: found in the text leftmost-longest (tokenizers' Aho-Corasick MatchKind), with
// single_word, lstrip and rstrip applied as AddedVocabulary::find_matches applies them.

struct AddedToken {
  std::string content;
  int32_t id;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// Rust regex's Unicode `\w` for single_word's boundaries: alphabetic, marks, decimal digits,
// connector punctuation and the joiners, asked of PCRE2 (10.40+ knows the Alphabetic property).
const std::shared_ptr<const Regex>& WordCharRegex() {
  static const std::shared_ptr<const Regex> re = [] {
    auto r = Regex::CompilePcre2("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]");
    return r.ok() ? r.value() : nullptr;
  }();
  return re;
}

bool IsWordChar(char32_t c) {
  if (c < 0x80) return std::isalnum(static_cast<int>(c)) || c == '_';
  const auto& re = WordCharRegex();
  std::string s;
  AppendUtf8(&s, c);
  thread_local std::vector<std::pair<size_t, size_t>> m;
  re->FindAll(s, &m);
  return !m.empty();
}

class TokenMatcher {
 public:
  void Build(std::vector<const AddedToken*> tokens) {
    tokens_ = std::move(tokens);
    nodes_.assign(1, Node{});
    first_.fill(false);
    for (size_t t = 0; t < tokens_.size(); ++t) {
      const std::string& s = patterns_.empty() ? tokens_[t]->content : patterns_[t];
      if (s.empty()) continue;
      first_[static_cast<unsigned char>(s[0])] = true;
      int n = 0;
      for (unsigned char c : s) {
        int child = Child(n, c);
        if (child < 0) {
          child = static_cast<int>(nodes_.size());
          nodes_[n].next.emplace_back(c, child);
          nodes_.push_back(Node{});
        }
        n = child;
      }
      if (nodes_[n].token < 0) nodes_[n].token = static_cast<int>(t);
    }
  }
  // The patterns to match when they differ from the contents (normalized added tokens).
  void SetPatterns(std::vector<std::string> p) { patterns_ = std::move(p); }
  bool empty() const { return tokens_.empty(); }

  struct Match {
    size_t start, end;
    int32_t id;
  };
  void Find(std::string_view s, std::vector<Match>* out) const {
    out->clear();
    if (tokens_.empty()) return;
    size_t start_offset = 0;
    size_t pos = 0;
    while (pos < s.size()) {
      if (!first_[static_cast<unsigned char>(s[pos])]) {
        ++pos;
        continue;
      }
      int n = 0, best = -1;
      size_t best_end = 0;
      for (size_t k = pos; k < s.size(); ++k) {
        n = Child(n, static_cast<unsigned char>(s[k]));
        if (n < 0) break;
        if (nodes_[n].token >= 0) {
          best = nodes_[n].token;
          best_end = k + 1;
        }
      }
      if (best < 0) {
        ++pos;
        continue;
      }
      const AddedToken& tok = *tokens_[best];
      size_t start = pos, stop = best_end;
      // The search goes on after the match itself, even when single_word discards it or rstrip
      // takes the spaces after it (Aho-Corasick's find_iter).
      pos = best_end;
      if (tok.single_word) {
        const bool start_ok = start == 0 || !IsWordChar(LastChar(s.substr(0, start)));
        const bool stop_ok = stop == s.size() || !IsWordChar(FirstChar(s.substr(stop)));
        if (!start_ok || !stop_ok) continue;
      }
      if (tok.lstrip) {
        size_t ns = start;
        while (ns > 0) {
          size_t b = ns - 1;
          while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
          size_t i = b;
          if (!IsWhiteSpace(NextChar(s, i))) break;
          ns = b;
        }
        start = std::max(ns, start_offset);
      }
      if (tok.rstrip) {
        while (stop < s.size()) {
          size_t i = stop;
          if (!IsWhiteSpace(NextChar(s, i))) break;
          stop = i;
        }
      }
      out->push_back(Match{start, stop, tok.id});
      start_offset = stop;
    }
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> next;
    int token = -1;
  };
  int Child(int n, unsigned char c) const {
    for (const auto& [k, v] : nodes_[n].next) {
      if (k == c) return v;
    }
    return -1;
  }
  static char32_t LastChar(std::string_view s) {
    size_t b = s.size() - 1;
    while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
    return NextChar(s, b);
  }
  static char32_t FirstChar(std::string_view s) {
    size_t i = 0;
    return NextChar(s, i);
  }
  std::vector<const AddedToken*> tokens_;
  std::vector<std::string> patterns_;
  std::vector<Node> nodes_;
  std::array<bool, 256> first_{};
};

// ---------------------------------------------------------------------------------------------
// The BPE model (tokenizers models/bpe: merge_word and Word::merge_all).

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Open addressing from a pair of ids to (rank, merged id): the merge loop's hot lookup.
class MergeTable {
 public:
  void Reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
  }
  void Put(int32_t a, int32_t b, uint32_t rank, int32_t id) {
    const uint64_t key = Key(a, b);
    for (size_t i = Hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == key) {
        slots_[i] = Slot{key, rank, id};  // a repeated pair keeps its last rank, as a HashMap does
        return;
      }
    }
  }
  const std::pair<uint32_t, int32_t>* Get(int32_t a, int32_t b,
                                          std::pair<uint32_t, int32_t>* tmp) const {
    const uint64_t key = Key(a, b);
    for (size_t i = Hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) {
        *tmp = {s.rank, s.id};
        return tmp;
      }
      if (s.key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key = kEmpty;
    uint32_t rank = 0;
    int32_t id = 0;
  };
  static uint64_t Key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static size_t Hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// Words already merged, shared by the threads that encode (tokenizers keeps a cache too).
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 256;
  bool Get(std::string_view word, std::vector<int32_t>* out) const {
    const size_t h = StringHash{}(word);
    Shard& s = shards_[h % kShards];
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(word);
    if (it == s.map.end()) return false;
    out->insert(out->end(), it->second.begin(), it->second.end());
    return true;
  }
  void Put(std::string_view word, const int32_t* ids, size_t n) const {
    const size_t h = StringHash{}(word);
    Shard& s = shards_[h % kShards];
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.map.size() >= kPerShard) return;  // full: like tokenizers, stop adding
    s.map.emplace(std::string(word), std::vector<int32_t>(ids, ids + n));
  }

 private:
  static constexpr size_t kShards = 32;
  static constexpr size_t kPerShard = 200000 / kShards;
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  mutable std::array<Shard, kShards> shards_;
};

struct Bpe {
  Vocab vocab;
  MergeTable merges;
  std::vector<int32_t> bmp_char_id;    // single-char tokens below U+10000, -1 when none
  std::array<int32_t, 256> byte_id{};  // <0xXX> tokens, -1 when none
  int32_t unk_id = -1;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  WordCache cache;

  int32_t CharId(std::string_view word, size_t i, size_t n, char32_t cp) const {
    if (cp < 0x10000) return bmp_char_id[cp];
    auto it = vocab.find(word.substr(i, n));
    return it == vocab.end() ? -1 : it->second;
  }

  void Tokenize(std::string_view word, std::vector<int32_t>* out) const {
    if (word.empty()) return;
    if (ignore_merges) {
      auto it = vocab.find(word);
      if (it != vocab.end()) {
        out->push_back(it->second);
        return;
      }
    }
    const bool cacheable = word.size() < WordCache::kMaxWordBytes;
    if (cacheable && cache.Get(word, out)) return;
    const size_t before = out->size();
    MergeWord(word, out);
    if (cacheable) cache.Put(word, out->data() + before, out->size() - before);
  }

  struct Symbol {
    int32_t id;
    int32_t prev, next;
    uint32_t len;  // bytes; 0 once merged into its left neighbour
  };

  void MergeWord(std::string_view w, std::vector<int32_t>* out) const {
    thread_local std::vector<Symbol> sym;
    sym.clear();
    const auto add = [&](int32_t id, uint32_t len) {
      const int32_t k = static_cast<int32_t>(sym.size());
      if (k > 0) sym.back().next = k;
      sym.push_back(Symbol{id, k - 1, -1, len});
    };
    int32_t pending_unk_len = -1;  // an unk not yet added (fuse_unk extends it)
    size_t i = 0;
    while (i < w.size()) {
      const size_t start = i;
      const char32_t cp = NextChar(w, i);
      const uint32_t n = static_cast<uint32_t>(i - start);
      const int32_t id = CharId(w, start, n, cp);
      if (id >= 0) {
        if (pending_unk_len >= 0) add(unk_id, pending_unk_len);
        pending_unk_len = -1;
        add(id, n);
        continue;
      }
      if (byte_fallback) {
        bool all = true;
        for (size_t k = start; k < i; ++k)
          all = all && byte_id[static_cast<unsigned char>(w[k])] >= 0;
        if (all) {
          // Bytes do not flush a pending unk: tokenizers' merge_word adds it only before a
          // known char or at the end.
          for (size_t k = start; k < i; ++k) add(byte_id[static_cast<unsigned char>(w[k])], 1);
          continue;
        }
      }
      if (unk_id >= 0) {
        if (pending_unk_len >= 0 && fuse_unk) {
          pending_unk_len += n;
        } else {
          if (pending_unk_len >= 0) add(unk_id, pending_unk_len);
          pending_unk_len = static_cast<int32_t>(n);
        }
      }
      // With neither byte fallback nor unk the char is dropped, as tokenizers drops it.
    }
    if (pending_unk_len >= 0) add(unk_id, pending_unk_len);
    MergeAll(&sym);
    for (const Symbol& s : sym) {
      if (s.len != 0) out->push_back(s.id);
    }
  }

  // Applies the lowest-ranked merge present, leftmost first among equal ranks, until none
  // applies, with a min-heap of (rank, position) and stale entries skipped: O(n log n).
  void MergeAll(std::vector<Symbol>* symbols) const {
    std::vector<Symbol>& s = *symbols;
    if (s.size() < 2) return;
    struct Entry {
      uint32_t rank;
      uint32_t pos;
      int32_t new_id;
    };
    const auto later = [](const Entry& a, const Entry& b) {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    };
    thread_local std::vector<Entry> heap;
    heap.clear();
    std::pair<uint32_t, int32_t> tmp;
    for (size_t k = 0; k + 1 < s.size(); ++k) {
      if (const auto* m = merges.Get(s[k].id, s[k + 1].id, &tmp)) {
        heap.push_back(Entry{m->first, static_cast<uint32_t>(k), m->second});
      }
    }
    std::make_heap(heap.begin(), heap.end(), later);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), later);
      const Entry top = heap.back();
      heap.pop_back();
      Symbol& left = s[top.pos];
      if (left.len == 0 || left.next < 0) continue;
      const int32_t next_pos = left.next;
      const Symbol right = s[next_pos];
      const auto* cur = merges.Get(left.id, right.id, &tmp);
      if (cur == nullptr || cur->second != top.new_id) continue;  // stale
      left.id = top.new_id;
      left.len += right.len;
      left.next = right.next;
      s[next_pos].len = 0;
      if (right.next >= 0) s[right.next].prev = static_cast<int32_t>(top.pos);
      if (left.prev >= 0) {
        if (const auto* m = merges.Get(s[left.prev].id, left.id, &tmp)) {
          heap.push_back(Entry{m->first, static_cast<uint32_t>(left.prev), m->second});
          std::push_heap(heap.begin(), heap.end(), later);
        }
      }
      if (left.next >= 0) {
        if (const auto* m = merges.Get(left.id, s[left.next].id, &tmp)) {
          heap.push_back(Entry{m->first, top.pos, m->second});
          std::push_heap(heap.begin(), heap.end(), later);
        }
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Decoders

enum class DecKind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };

struct Decoder {
  DecKind kind;
  Pattern pattern;      // kReplace
  std::string content;  // kReplace: replacement; kMetaspace: the replacement char
  char32_t strip_char = ' ';
  size_t strip_start = 0, strip_stop = 0;
  PrependScheme prepend = PrependScheme::kAlways;
};

// u8::from_str_radix(s, 16) on the two chars of a <0xXX> token (it also takes a leading '+').
int ParseHexByte(std::string_view h) {
  int v = 0;
  size_t i = 0;
  if (h[0] == '+') i = 1;
  if (i == h.size()) return -1;
  for (; i < h.size(); ++i) {
    const char c = h[i];
    const int d = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

void ApplyDecoder(const Decoder& d, std::vector<std::string>* tokens) {
  std::vector<std::string>& t = *tokens;
  switch (d.kind) {
    case DecKind::kByteLevel: {
      std::string bytes;
      for (const std::string& tok : t) {
        const size_t mark = bytes.size();
        size_t i = 0;
        bool all = true;
        while (i < tok.size()) {
          const int b = Bytes().ByteOf(NextChar(tok, i));
          if (b < 0) {
            all = false;
            break;
          }
          bytes.push_back(static_cast<char>(b));
        }
        if (!all) {  // a token outside the alphabet (an added token) goes as its own bytes
          bytes.resize(mark);
          bytes += tok;
        }
      }
      t.assign(1, Utf8Lossy(bytes));
      return;
    }
    case DecKind::kReplace:
      for (std::string& tok : t) tok = d.pattern.Replace(tok, d.content);
      return;
    case DecKind::kByteFallback: {
      std::vector<std::string> out;
      out.reserve(t.size());
      std::string pending;
      const auto flush = [&] {
        if (pending.empty()) return;
        if (IsWellFormed(pending)) {
          out.push_back(pending);
        } else {
          for (size_t k = 0; k < pending.size(); ++k) out.emplace_back(kReplacementChar);
        }
        pending.clear();
      };
      for (std::string& tok : t) {
        int b = -1;
        if (tok.size() == 6 && tok.starts_with("<0x") && tok.back() == '>') {
          b = ParseHexByte(std::string_view(tok).substr(3, 2));
        }
        if (b >= 0) {
          pending.push_back(static_cast<char>(b));
        } else {
          flush();
          out.push_back(std::move(tok));
        }
      }
      flush();
      t = std::move(out);
      return;
    }
    case DecKind::kFuse: {
      std::string all;
      for (const std::string& tok : t) all += tok;
      t.assign(1, std::move(all));
      return;
    }
    case DecKind::kStrip:
      for (std::string& tok : t) {
        std::vector<std::pair<size_t, char32_t>> chars;  // (byte offset, char)
        for (size_t i = 0; i < tok.size();) {
          const size_t at = i;
          chars.emplace_back(at, NextChar(tok, i));
        }
        size_t a = 0, b = chars.size();
        for (size_t k = 0; k < d.strip_start && k < chars.size(); ++k) {
          if (chars[k].second != d.strip_char) break;
          a = k + 1;
        }
        for (size_t k = 0; k < d.strip_stop && k < chars.size(); ++k) {
          const size_t idx = chars.size() - k - 1;
          if (chars[idx].second != d.strip_char) break;
          b = idx;
        }
        if (b < a) b = a;
        const size_t from = a < chars.size() ? chars[a].first : tok.size();
        const size_t to = b < chars.size() ? chars[b].first : tok.size();
        tok = tok.substr(from, to - from);
      }
      return;
    case DecKind::kMetaspace:
      for (size_t k = 0; k < t.size(); ++k) {
        std::string s;
        std::string_view tok = t[k];
        size_t pos = 0;
        while (pos < tok.size()) {
          if (tok.substr(pos).starts_with(d.content)) {
            if (!(k == 0 && d.prepend != PrependScheme::kNever)) s += ' ';
            pos += d.content.size();
          } else {
            s += tok[pos++];
          }
        }
        t[k] = std::move(s);
      }
      return;
  }
}

// transformers' clean_up_tokenization (tokenizer_config's clean_up_tokenization_spaces).
std::string CleanUpTokenization(std::string s) {
  static const std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    std::string out;
    out.reserve(s.size());
    size_t pos = 0, hit;
    while ((hit = s.find(from, pos)) != std::string::npos) {
      out.append(s, pos, hit - pos);
      out += to;
      pos = hit + from.size();
    }
    out.append(s, pos, std::string::npos);
    s = std::move(out);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Loading: every field read is checked, and every error names the file and the field.

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}
  Status Err(const std::string& field, const std::string& what) const {
    return Status::InvalidArgument(file_ + ": " + field + ": " + what);
  }
  Status Unsupported(const std::string& field, const std::string& what) const {
    return Status::InvalidArgument(file_ + ": " + field + ": " + what +
                                   " is not supported by this tokenizer (refused rather than "
                                   "tokenized differently from Hugging Face tokenizers)");
  }
  // An optional bool field; `def` when absent or null.
  Status Bool(const json& o, const std::string& path, const char* key, bool def, bool* out) const {
    *out = def;
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return Status::Ok();
    if (!it->is_boolean()) return Err(path + "." + key, "expected true or false");
    *out = it->get<bool>();
    return Status::Ok();
  }
  Status Str(const json& o, const std::string& path, const char* key, std::string* out) const {
    auto it = o.find(key);
    if (it == o.end() || !it->is_string()) return Err(path + "." + key, "expected a string");
    *out = it->get<std::string>();
    return Status::Ok();
  }
  Status OneChar(const json& o, const std::string& path, const char* key, std::string* out) const {
    MOREH_RETURN_IF_ERROR(Str(o, path, key, out));
    size_t i = 0;
    if (out->empty() || (NextChar(*out, i), i != out->size())) {
      return Err(path + "." + key, "expected exactly one character");
    }
    return Status::Ok();
  }
  Status Type(const json& o, const std::string& path, std::string* out) const {
    if (std::count(path.begin(), path.end(), '[') > 16) return Err(path, "nested too deeply");
    if (!o.is_object()) return Err(path, "expected an object");
    return Str(o, path, "type", out);
  }
  Status ReadPattern(const json& o, const std::string& path, Pattern* out) const {
    auto it = o.find("pattern");
    if (it == o.end() || !it->is_object() || it->size() != 1) {
      return Err(path + ".pattern", "expected {\"String\": ...} or {\"Regex\": ...}");
    }
    if (auto s = it->find("String"); s != it->end()) {
      if (!s->is_string() || s->get<std::string>().empty()) {
        return Err(path + ".pattern.String", "expected a non-empty string");
      }
      out->literal = s->get<std::string>();
      return Status::Ok();
    }
    if (auto r = it->find("Regex"); r != it->end()) {
      if (!r->is_string()) return Err(path + ".pattern.Regex", "expected a string");
      auto re = Regex::Compile(r->get<std::string>());
      if (!re.ok()) {
        return Err(path + ".pattern.Regex",
                   "regex " + r->dump() + " is not supported: " + re.status().message());
      }
      out->regex = re.value();
      return Status::Ok();
    }
    return Err(path + ".pattern", "expected {\"String\": ...} or {\"Regex\": ...}");
  }
  Status ReadPrependScheme(const json& o, const std::string& path, PrependScheme* out) const {
    *out = PrependScheme::kAlways;
    if (auto it = o.find("prepend_scheme"); it != o.end() && !it->is_null()) {
      const std::string s = it->is_string() ? it->get<std::string>() : "";
      if (s == "always") {
        *out = PrependScheme::kAlways;
      } else if (s == "first") {
        *out = PrependScheme::kFirst;
      } else if (s == "never") {
        *out = PrependScheme::kNever;
      } else {
        return Err(path + ".prepend_scheme", "expected \"always\", \"first\" or \"never\"");
      }
    }
    if (auto it = o.find("add_prefix_space");
        it != o.end() && it->is_boolean() && !it->get<bool>()) {
      // The old form: tokenizers takes add_prefix_space=false only with prepend_scheme "never".
      if (*out != PrependScheme::kNever) {
        return Err(path + ".add_prefix_space", "false does not match prepend_scheme");
      }
    }
    return Status::Ok();
  }
  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

StatusOr<json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    return Status::InvalidArgument(path + ": not valid JSON (" + e.what() + ")");
  }
}

// A special token in tokenizer_config.json: a string, {"content": s, ...} (AddedToken), or null.
std::optional<std::string> ConfigToken(const json& config, const char* key, bool* present) {
  *present = false;
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  *present = true;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct HfTokenizer::Impl {
  std::vector<AddedToken> added;
  Vocab added_ids;                  // content -> id
  TokenMatcher raw_matcher;         // added tokens matched on the raw text (normalized: false)
  TokenMatcher normalized_matcher;  // the others, matched after normalization
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  Bpe bpe;
  bool has_template = false;
  // The single-sequence template: ids before and after the sequence.
  std::vector<int32_t> template_before, template_after;
  bool has_decoder = false;
  std::vector<Decoder> decoders;
  std::vector<std::string> id_to_token;
  std::vector<uint8_t> id_known;
  int64_t bos = -1, eos = -1, pad = -1;
  bool clean_up_spaces = false;
  size_t max_token_bytes = 1;
  double shrink = 1;  // how much the normalizer can shrink text (NFC composes up to 3 to 1)
  bool prefix_bound = true;

  Status LoadJson(const json& root, const Reader& r);
  Status LoadNormalizer(const json& n, const std::string& path, const Reader& r);
  Status LoadPreTokenizer(const json& p, const std::string& path, const Reader& r);
  Status LoadModel(const json& m, const Reader& r);
  Status LoadAddedTokens(const json& a, const Reader& r);
  Status LoadPostProcessor(const json& p, const std::string& path, const Reader& r);
  Status LoadDecoder(const json& d, const std::string& path, const Reader& r);
  Status ApplyConfig(const json& config, const std::string& config_path);
  int64_t IdOf(std::string_view token) const;

  void EncodeSegment(std::string text, bool at_start, std::vector<int32_t>* ids) const;
  std::vector<int64_t> Encode(std::string_view text, bool add_special) const;
  std::string Decode(const std::vector<int64_t>& ids) const;
};

Status HfTokenizer::Impl::LoadNormalizer(const json& n, const std::string& path, const Reader& r) {
  if (n.is_null()) return Status::Ok();
  std::string type;
  MOREH_RETURN_IF_ERROR(r.Type(n, path, &type));
  if (type == "Sequence") {
    auto it = n.find("normalizers");
    if (it == n.end() || !it->is_array()) return r.Err(path + ".normalizers", "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      MOREH_RETURN_IF_ERROR(
          LoadNormalizer((*it)[i], path + ".normalizers[" + std::to_string(i) + "]", r));
    }
    return Status::Ok();
  }
  Normalizer norm;
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
#ifdef MOREH_WITH_ICU
    const int which = type == "NFC" ? 0 : type == "NFD" ? 1 : type == "NFKC" ? 2 : 3;
    norm.kind = NormKind::kUnicode;
    norm.icu = Unicode9Normalizer(which);
    if (norm.icu == nullptr) return r.Err(path, "ICU has no Unicode 9.0 normalizer");
    if (type == "NFC" || type == "NFKC") shrink = std::max(shrink, 3.0);
    normalizers.push_back(std::move(norm));
    return Status::Ok();
#else
    return r.Unsupported(path + ".type", "\"" + type + "\" (this build has no ICU)");
#endif
  }
  if (type == "Replace") {
    norm.kind = NormKind::kReplace;
    MOREH_RETURN_IF_ERROR(r.ReadPattern(n, path, &norm.pattern));
    MOREH_RETURN_IF_ERROR(r.Str(n, path, "content", &norm.content));
    if (norm.pattern.regex) {
      prefix_bound = false;  // a regex may delete any amount of text
    } else if (norm.content.empty()) {
      prefix_bound = false;
    } else {
      shrink = std::max(shrink, static_cast<double>(norm.pattern.literal.size()) /
                                    static_cast<double>(norm.content.size()));
    }
    normalizers.push_back(std::move(norm));
    return Status::Ok();
  }
  if (type == "Prepend") {
    norm.kind = NormKind::kPrepend;
    MOREH_RETURN_IF_ERROR(r.Str(n, path, "prepend", &norm.content));
    normalizers.push_back(std::move(norm));
    return Status::Ok();
  }
  return r.Unsupported(path + ".type", "normalizer \"" + type + "\"");
}

Status HfTokenizer::Impl::LoadPreTokenizer(const json& p, const std::string& path,
                                           const Reader& r) {
  if (p.is_null()) return Status::Ok();
  std::string type;
  MOREH_RETURN_IF_ERROR(r.Type(p, path, &type));
  if (type == "Sequence") {
    auto it = p.find("pretokenizers");
    if (it == p.end() || !it->is_array()) {
      return r.Err(path + ".pretokenizers", "expected an array");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      MOREH_RETURN_IF_ERROR(
          LoadPreTokenizer((*it)[i], path + ".pretokenizers[" + std::to_string(i) + "]", r));
    }
    return Status::Ok();
  }
  PreTokenizer pt;
  if (type == "Split") {
    pt.kind = PreKind::kSplit;
    MOREH_RETURN_IF_ERROR(r.ReadPattern(p, path, &pt.pattern));
    std::string b;
    MOREH_RETURN_IF_ERROR(r.Str(p, path, "behavior", &b));
    static const std::pair<const char*, SplitBehavior> kBehaviors[] = {
        {"Removed", SplitBehavior::kRemoved},
        {"Isolated", SplitBehavior::kIsolated},
        {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
        {"MergedWithNext", SplitBehavior::kMergedWithNext},
        {"Contiguous", SplitBehavior::kContiguous}};
    bool found = false;
    for (const auto& [name, v] : kBehaviors) {
      if (b == name) {
        pt.behavior = v;
        found = true;
      }
    }
    if (!found) return r.Err(path + ".behavior", "unknown split behavior \"" + b + "\"");
    MOREH_RETURN_IF_ERROR(r.Bool(p, path, "invert", false, &pt.invert));
  } else if (type == "ByteLevel") {
    pt.kind = PreKind::kByteLevel;
    MOREH_RETURN_IF_ERROR(r.Bool(p, path, "add_prefix_space", true, &pt.add_prefix_space));
    MOREH_RETURN_IF_ERROR(r.Bool(p, path, "use_regex", true, &pt.use_regex));
    if (pt.use_regex) {
      auto re = Regex::Compile(
          "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+");
      if (!re.ok()) return r.Err(path, re.status().message());
      pt.gpt2 = re.value();
    }
  } else if (type == "Metaspace") {
    pt.kind = PreKind::kMetaspace;
    MOREH_RETURN_IF_ERROR(r.OneChar(p, path, "replacement", &pt.replacement));
    MOREH_RETURN_IF_ERROR(r.ReadPrependScheme(p, path, &pt.prepend));
    MOREH_RETURN_IF_ERROR(r.Bool(p, path, "split", true, &pt.split));
  } else {
    return r.Unsupported(path + ".type", "pre_tokenizer \"" + type + "\"");
  }
  pre_tokenizers.push_back(std::move(pt));
  return Status::Ok();
}

Status HfTokenizer::Impl::LoadModel(const json& m, const Reader& r) {
  if (!m.is_object()) return r.Err("model", "expected an object");
  std::string type;
  if (auto it = m.find("type"); it != m.end()) {
    if (!it->is_string()) return r.Err("model.type", "expected a string");
    type = it->get<std::string>();
  } else if (m.contains("merges")) {
    type = "BPE";  // old files name no type; only BPE has merges
  }
  if (type != "BPE") {
    return r.Unsupported("model.type", "model \"" + type + "\" (only BPE is implemented)");
  }
  if (auto it = m.find("dropout"); it != m.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0) {
      return r.Unsupported("model.dropout", "BPE dropout " + it->dump());
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto it = m.find(key); it != m.end() && !it->is_null()) {
      if (!it->is_string()) return r.Err(std::string("model.") + key, "expected a string or null");
      if (!it->get<std::string>().empty()) {
        return r.Unsupported(std::string("model.") + key, it->dump());
      }
    }
  }
  MOREH_RETURN_IF_ERROR(r.Bool(m, "model", "fuse_unk", false, &bpe.fuse_unk));
  MOREH_RETURN_IF_ERROR(r.Bool(m, "model", "byte_fallback", false, &bpe.byte_fallback));
  MOREH_RETURN_IF_ERROR(r.Bool(m, "model", "ignore_merges", false, &bpe.ignore_merges));

  auto v = m.find("vocab");
  if (v == m.end() || !v->is_object()) return r.Err("model.vocab", "expected an object");
  bpe.vocab.reserve(v->size());
  std::unordered_map<int64_t, std::string> by_id;
  by_id.reserve(v->size());
  for (auto it = v->begin(); it != v->end(); ++it) {
    const json& id = it.value();
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return r.Err("model.vocab[" + json(it.key()).dump() + "]",
                   "id " + id.dump() + " is not an integer in [0, 2^31)");
    }
    const int64_t i = id.get<int64_t>();
    auto [prev, fresh] = by_id.emplace(i, it.key());
    if (!fresh) {
      return r.Err("model.vocab", "id " + std::to_string(i) + " is given to both " +
                                      json(prev->second).dump() + " and " + json(it.key()).dump());
    }
    bpe.vocab.emplace(it.key(), static_cast<int32_t>(i));
  }
  if (auto it = m.find("unk_token"); it != m.end() && !it->is_null()) {
    if (!it->is_string()) return r.Err("model.unk_token", "expected a string or null");
    auto u = bpe.vocab.find(it->get<std::string>());
    if (u == bpe.vocab.end()) {
      return r.Err("model.unk_token", it->dump() + " is not in model.vocab");
    }
    bpe.unk_id = u->second;
  }

  auto mg = m.find("merges");
  if (mg == m.end() || !mg->is_array()) return r.Err("model.merges", "expected an array");
  bpe.merges.Reserve(mg->size());
  uint32_t rank = 0;
  int style = 0;  // 1: "a b" strings (tokenizers < 0.20), 2: ["a", "b"] pairs
  for (size_t i = 0; i < mg->size(); ++i) {
    const json& e = (*mg)[i];
    const std::string field = "model.merges[" + std::to_string(i) + "]";
    std::string a, b;
    if (e.is_string()) {
      if (style == 2) return r.Err(field, "a string among [a, b] pairs");
      style = 1;
      const std::string s = e.get<std::string>();
      if (s.starts_with("#version")) continue;  // a merges.txt header, skipped as tokenizers does
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return r.Err(field, json(s).dump() + " does not split into 2 parts at a space");
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array()) {
      if (e.size() != 2 || !e[0].is_string() || !e[1].is_string()) {
        return r.Err(field, "expected a pair of strings, got " + e.dump());
      }
      if (style == 1) return r.Err(field, "a pair among \"a b\" strings");
      style = 2;
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return r.Err(field, "expected \"a b\" or [\"a\", \"b\"]");
    }
    const auto ia = bpe.vocab.find(a), ib = bpe.vocab.find(b), iab = bpe.vocab.find(a + b);
    if (ia == bpe.vocab.end())
      return r.Err(field, "token " + json(a).dump() + " is not in model.vocab");
    if (ib == bpe.vocab.end())
      return r.Err(field, "token " + json(b).dump() + " is not in model.vocab");
    if (iab == bpe.vocab.end()) {
      return r.Err(field, "the merged token " + json(a + b).dump() + " is not in model.vocab");
    }
    bpe.merges.Put(ia->second, ib->second, rank++, iab->second);
  }

  bpe.bmp_char_id.assign(0x10000, -1);
  for (const auto& [tok, id] : bpe.vocab) {
    size_t i = 0;
    if (tok.empty() || !IsWellFormed(tok)) continue;
    const char32_t cp = NextChar(tok, i);
    if (i == tok.size() && cp < 0x10000) bpe.bmp_char_id[cp] = id;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = bpe.vocab.find(std::string_view(name));
    bpe.byte_id[b] = it == bpe.vocab.end() ? -1 : it->second;
  }
  return Status::Ok();
}

Status HfTokenizer::Impl::LoadAddedTokens(const json& a, const Reader& r) {
  if (a.is_null()) return Status::Ok();
  if (!a.is_array()) return r.Err("added_tokens", "expected an array");
  // tokenizers re-derives each id when it loads (AddedVocabulary::add_tokens): a token already
  // in the vocabulary keeps that id, a new one gets the next free id. A file whose ids disagree is
  // loaded by tokenizers with other ids than it says, so it is refused.
  std::unordered_map<std::string, int32_t> seen;
  int64_t max_added = -1;
  const int64_t model_size = static_cast<int64_t>(bpe.vocab.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const json& t = a[i];
    const std::string path = "added_tokens[" + std::to_string(i) + "]";
    if (!t.is_object()) return r.Err(path, "expected an object");
    AddedToken tok;
    MOREH_RETURN_IF_ERROR(r.Str(t, path, "content", &tok.content));
    auto id = t.find("id");
    if (id == t.end() || !id->is_number_integer() || id->get<int64_t>() < 0 ||
        id->get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return r.Err(path + ".id", "expected an integer in [0, 2^31)");
    }
    tok.id = static_cast<int32_t>(id->get<int64_t>());
    MOREH_RETURN_IF_ERROR(r.Bool(t, path, "single_word", false, &tok.single_word));
    MOREH_RETURN_IF_ERROR(r.Bool(t, path, "lstrip", false, &tok.lstrip));
    MOREH_RETURN_IF_ERROR(r.Bool(t, path, "rstrip", false, &tok.rstrip));
    MOREH_RETURN_IF_ERROR(r.Bool(t, path, "normalized", true, &tok.normalized));
    MOREH_RETURN_IF_ERROR(r.Bool(t, path, "special", false, &tok.special));
    if (tok.content.empty()) continue;  // tokenizers ignores an empty token
    if (seen.count(tok.content)) {
      return r.Err(path + ".content", json(tok.content).dump() + " is added twice");
    }
    int64_t expect;
    if (auto v = bpe.vocab.find(tok.content); v != bpe.vocab.end()) {
      expect = v->second;
    } else if (max_added < 0) {
      expect = model_size;
    } else {
      expect = (max_added >= model_size || model_size == 0) ? max_added + 1 : model_size;
    }
    if (expect != tok.id) {
      return r.Err(path + ".id", json(tok.content).dump() + " has id " + std::to_string(tok.id) +
                                     " but tokenizers gives it id " + std::to_string(expect));
    }
    max_added = std::max<int64_t>(max_added, tok.id);
    seen.emplace(tok.content, tok.id);
    if (tok.single_word && !WordCharRegex()) {
      return r.Unsupported(path + ".single_word", "true (this PCRE2 lacks \\p{Alphabetic})");
    }
    if (tok.lstrip) prefix_bound = false;  // it can swallow any run of spaces before it
    added.push_back(std::move(tok));
  }
  return Status::Ok();
}

Status HfTokenizer::Impl::LoadPostProcessor(const json& p, const std::string& path,
                                            const Reader& r) {
  if (p.is_null()) return Status::Ok();
  std::string type;
  MOREH_RETURN_IF_ERROR(r.Type(p, path, &type));
  if (type == "Sequence") {
    auto it = p.find("processors");
    if (it == p.end() || !it->is_array()) return r.Err(path + ".processors", "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      MOREH_RETURN_IF_ERROR(
          LoadPostProcessor((*it)[i], path + ".processors[" + std::to_string(i) + "]", r));
    }
    return Status::Ok();
  }
  if (type == "ByteLevel") return Status::Ok();  // it only moves offsets
  if (type != "TemplateProcessing") {
    return r.Unsupported(path + ".type", "post_processor \"" + type + "\"");
  }
  if (has_template) return r.Unsupported(path, "a second TemplateProcessing");
  has_template = true;
  auto specials = p.find("special_tokens");
  if (specials == p.end() || !specials->is_object()) {
    return r.Err(path + ".special_tokens", "expected an object");
  }
  auto single = p.find("single");
  if (single == p.end() || !single->is_array()) return r.Err(path + ".single", "expected an array");
  bool seen_a = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const json& piece = (*single)[i];
    const std::string f = path + ".single[" + std::to_string(i) + "]";
    if (!piece.is_object() || piece.size() != 1) {
      return r.Err(f, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    }
    if (auto s = piece.find("Sequence"); s != piece.end()) {
      if (!s->is_object() || s->value("id", json()) != "A") {
        return r.Unsupported(f + ".Sequence.id", s->dump() + " in the single template");
      }
      if (seen_a) return r.Unsupported(f, "$A twice in the single template");
      seen_a = true;
      continue;
    }
    auto st = piece.find("SpecialToken");
    if (st == piece.end() || !st->is_object() || !st->contains("id") || !(*st)["id"].is_string()) {
      return r.Err(f, "expected {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": ...}");
    }
    const std::string name = (*st)["id"].get<std::string>();
    auto def = specials->find(name);
    if (def == specials->end()) {
      return r.Err(f, "special token " + json(name).dump() + " is missing from special_tokens");
    }
    auto ids = def->find("ids");
    if (!def->is_object() || ids == def->end() || !ids->is_array()) {
      return r.Err(path + ".special_tokens[" + json(name).dump() + "].ids", "expected an array");
    }
    for (const json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return r.Err(path + ".special_tokens[" + json(name).dump() + "].ids",
                     "id " + id.dump() + " is not an integer in [0, 2^31)");
      }
      (seen_a ? template_after : template_before)
          .push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  if (!seen_a) return r.Unsupported(path + ".single", "a single template without $A");
  return Status::Ok();
}

Status HfTokenizer::Impl::LoadDecoder(const json& d, const std::string& path, const Reader& r) {
  if (d.is_null()) return Status::Ok();
  std::string type;
  MOREH_RETURN_IF_ERROR(r.Type(d, path, &type));
  if (type == "Sequence") {
    auto it = d.find("decoders");
    if (it == d.end() || !it->is_array()) return r.Err(path + ".decoders", "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      MOREH_RETURN_IF_ERROR(
          LoadDecoder((*it)[i], path + ".decoders[" + std::to_string(i) + "]", r));
    }
    return Status::Ok();
  }
  Decoder dec;
  if (type == "ByteLevel") {
    dec.kind = DecKind::kByteLevel;
  } else if (type == "Replace") {
    dec.kind = DecKind::kReplace;
    MOREH_RETURN_IF_ERROR(r.ReadPattern(d, path, &dec.pattern));
    MOREH_RETURN_IF_ERROR(r.Str(d, path, "content", &dec.content));
  } else if (type == "ByteFallback") {
    dec.kind = DecKind::kByteFallback;
  } else if (type == "Fuse") {
    dec.kind = DecKind::kFuse;
  } else if (type == "Strip") {
    dec.kind = DecKind::kStrip;
    std::string c;
    MOREH_RETURN_IF_ERROR(r.OneChar(d, path, "content", &c));
    size_t i = 0;
    dec.strip_char = NextChar(c, i);
    for (const char* key : {"start", "stop"}) {
      auto it = d.find(key);
      if (it == d.end() || !it->is_number_unsigned()) {
        return r.Err(path + "." + key, "expected a non-negative integer");
      }
      (std::strcmp(key, "start") == 0 ? dec.strip_start : dec.strip_stop) = it->get<size_t>();
    }
  } else if (type == "Metaspace") {
    dec.kind = DecKind::kMetaspace;
    MOREH_RETURN_IF_ERROR(r.OneChar(d, path, "replacement", &dec.content));
    MOREH_RETURN_IF_ERROR(r.ReadPrependScheme(d, path, &dec.prepend));
  } else {
    return r.Unsupported(path + ".type", "decoder \"" + type + "\"");
  }
  decoders.push_back(std::move(dec));
  return Status::Ok();
}

Status HfTokenizer::Impl::LoadJson(const json& root, const Reader& r) {
  if (!root.is_object()) return r.Err("(top level)", "expected an object");
  if (auto v = root.find("version"); v != root.end() && *v != "1.0") {
    return r.Unsupported("version", v->dump());
  }
  if (!root.contains("model")) return r.Err("model", "missing");
  MOREH_RETURN_IF_ERROR(LoadModel(root["model"], r));
  MOREH_RETURN_IF_ERROR(LoadNormalizer(root.value("normalizer", json()), "normalizer", r));
  MOREH_RETURN_IF_ERROR(LoadPreTokenizer(root.value("pre_tokenizer", json()), "pre_tokenizer", r));
  MOREH_RETURN_IF_ERROR(LoadAddedTokens(root.value("added_tokens", json()), r));
  MOREH_RETURN_IF_ERROR(
      LoadPostProcessor(root.value("post_processor", json()), "post_processor", r));
  const json dec = root.value("decoder", json());
  has_decoder = !dec.is_null();
  MOREH_RETURN_IF_ERROR(LoadDecoder(dec, "decoder", r));

  // The id -> token table: the model's vocab, then the added tokens over it.
  int64_t size = 0;
  for (const auto& [tok, id] : bpe.vocab) size = std::max<int64_t>(size, int64_t{id} + 1);
  for (const AddedToken& t : added) size = std::max<int64_t>(size, int64_t{t.id} + 1);
  if (size > (int64_t{1} << 26)) {
    return r.Err("model.vocab", "ids up to " + std::to_string(size - 1) +
                                    " are out of range (at most 2^26 tokens)");
  }
  id_to_token.assign(static_cast<size_t>(size), std::string());
  id_known.assign(static_cast<size_t>(size), 0);
  for (const auto& [tok, id] : bpe.vocab) {
    id_to_token[id] = tok;
    id_known[id] = 1;
    max_token_bytes = std::max(max_token_bytes, tok.size());
  }
  for (const AddedToken& t : added) {
    added_ids.emplace(t.content, t.id);
    id_to_token[t.id] = t.content;
    id_known[t.id] = 1;
    max_token_bytes = std::max(max_token_bytes, t.content.size());
  }
  for (int32_t id : template_before) {
    if (id >= size || !id_known[id]) {
      return r.Err("post_processor", "template id " + std::to_string(id) + " names no token");
    }
  }
  for (int32_t id : template_after) {
    if (id >= size || !id_known[id]) {
      return r.Err("post_processor", "template id " + std::to_string(id) + " names no token");
    }
  }

  std::vector<const AddedToken*> raw, norm;
  std::vector<std::string> norm_patterns;
  // tokenizers lists the special tokens first, then the others; leftmost-longest matching makes
  // the order matter only between equal contents, which are refused above.
  for (const AddedToken& t : added) {
    if (t.normalized) {
      std::string p = t.content;
      for (const Normalizer& n : normalizers) n.Apply(&p);
      norm.push_back(&t);
      norm_patterns.push_back(std::move(p));
    } else {
      raw.push_back(&t);
    }
  }
  raw_matcher.Build(std::move(raw));
  normalized_matcher.SetPatterns(std::move(norm_patterns));
  normalized_matcher.Build(std::move(norm));

  // Without tokenizer_config.json: BOS and EOS as the template has them.
  if (template_before.size() == 1) bos = template_before[0];
  if (template_after.size() == 1) eos = template_after[0];
  return Status::Ok();
}

int64_t HfTokenizer::Impl::IdOf(std::string_view token) const {
  if (auto a = added_ids.find(token); a != added_ids.end()) return a->second;
  auto it = bpe.vocab.find(token);
  return it == bpe.vocab.end() ? -1 : it->second;
}

Status HfTokenizer::Impl::ApplyConfig(const json& config, const std::string& config_path) {
  const auto err = [&](const std::string& field, const std::string& what) {
    return Status::InvalidArgument(config_path + ": " + field + ": " + what);
  };
  if (!config.is_object()) return err("(top level)", "expected an object");
  const std::string cls = config.value("tokenizer_class", std::string());
  // LlamaTokenizerFast and GemmaTokenizerFast rebuild the template from these settings when they
  // load (update_post_processor), over the file's.
  const bool llama = cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast";
  const bool gemma = cls == "GemmaTokenizer" || cls == "GemmaTokenizerFast";
  struct Special {
    const char* key;
    int64_t* id;
    const char* llama_default;
    const char* gemma_default;
  };
  std::optional<std::string> names[3];
  const Special specials[] = {{"bos_token", &bos, "<s>", "<bos>"},
                              {"eos_token", &eos, "</s>", "<eos>"},
                              {"pad_token", &pad, nullptr, "<pad>"}};
  for (int k = 0; k < 3; ++k) {
    const Special& s = specials[k];
    bool present = false;
    std::optional<std::string> name = ConfigToken(config, s.key, &present);
    if (!present) {
      const char* def = llama ? s.llama_default : gemma ? s.gemma_default : nullptr;
      if (def != nullptr) name = def;
    }
    if (!present && !name) continue;  // keep what the template says
    names[k] = name;
    if (!name) {
      *s.id = -1;
      continue;
    }
    const int64_t id = IdOf(*name);
    if (id < 0) {
      return err(s.key, json(*name).dump() +
                            " is not a token of tokenizer.json (transformers would add it as a "
                            "new token; not supported)");
    }
    *s.id = id;
  }
  // Tokens the config has and tokenizer.json lacks would be new tokens to transformers.
  if (auto it = config.find("added_tokens_decoder"); it != config.end() && it->is_object()) {
    for (auto e = it->begin(); e != it->end(); ++e) {
      const std::string field = "added_tokens_decoder[" + json(e.key()).dump() + "]";
      char* end = nullptr;
      const long long id = std::strtoll(e.key().c_str(), &end, 10);
      const json content = e.value().is_object() ? e.value().value("content", json()) : json();
      if (end == e.key().c_str() || *end != '\0' || !content.is_string()) {
        return err(field, "expected an id and {\"content\": ...}");
      }
      if (id < 0 || id >= static_cast<long long>(id_to_token.size()) || !id_known[id] ||
          id_to_token[id] != content.get<std::string>()) {
        return err(field, content.dump() + " is not token " + e.key() +
                              " of tokenizer.json (transformers would add it; not supported)");
      }
    }
  }
  if (auto it = config.find("additional_special_tokens"); it != config.end() && it->is_array()) {
    for (const json& t : *it) {
      const json content = t.is_object() ? t.value("content", json()) : t;
      if (!content.is_string() || IdOf(content.get<std::string>()) < 0) {
        return err("additional_special_tokens", t.dump() +
                                                    " is not a token of tokenizer.json "
                                                    "(transformers would add it; not supported)");
      }
    }
  }
  if (auto it = config.find("split_special_tokens"); it != config.end() && *it == true) {
    return err("split_special_tokens", "true is not supported");
  }
  if (auto it = config.find("add_prefix_space");
      (llama || gemma) && it != config.end() && !it->is_null()) {
    // transformers then rebuilds the tokenizer from tokenizer.model (from_slow).
    return err("add_prefix_space", it->dump() + " for " + cls + " is not supported");
  }
  if (auto it = config.find("clean_up_tokenization_spaces"); it != config.end()) {
    if (!it->is_boolean()) return err("clean_up_tokenization_spaces", "expected true or false");
    clean_up_spaces = it->get<bool>();
  }
  if (llama || gemma) {
    bool add_bos = true, add_eos = false;
    for (auto [key, out] : {std::pair{"add_bos_token", &add_bos}, {"add_eos_token", &add_eos}}) {
      if (auto it = config.find(key); it != config.end() && !it->is_null()) {
        if (!it->is_boolean()) return err(key, "expected true or false");
        *out = it->get<bool>();
      }
    }
    if (add_bos && bos < 0) return err("add_bos_token", "true but there is no bos_token");
    if (add_eos && eos < 0) return err("add_eos_token", "true but there is no eos_token");
    has_template = true;
    template_before.clear();
    template_after.clear();
    if (add_bos) template_before.push_back(static_cast<int32_t>(bos));
    if (add_eos) template_after.push_back(static_cast<int32_t>(eos));
  }
  return Status::Ok();
}

void HfTokenizer::Impl::EncodeSegment(std::string text, bool at_start,
                                      std::vector<int32_t>* ids) const {
  for (const Normalizer& n : normalizers) n.Apply(&text);
  std::vector<Piece> pieces;
  if (normalized_matcher.empty()) {
    pieces.push_back(Piece{std::move(text), at_start});
  } else {
    std::vector<TokenMatcher::Match> found;
    normalized_matcher.Find(text, &found);
    size_t pos = 0;
    const auto flush_pieces = [&](size_t end) {
      if (end > pos) {
        std::vector<Piece> seg{Piece{text.substr(pos, end - pos), at_start && pos == 0}};
        for (const PreTokenizer& p : pre_tokenizers) ApplyPreTokenizer(p, &seg);
        for (const Piece& w : seg) bpe.Tokenize(w.text, ids);
      }
    };
    for (const auto& m : found) {
      flush_pieces(m.start);
      ids->push_back(m.id);
      pos = m.end;
    }
    flush_pieces(text.size());
    return;
  }
  for (const PreTokenizer& p : pre_tokenizers) ApplyPreTokenizer(p, &pieces);
  for (const Piece& w : pieces) bpe.Tokenize(w.text, ids);
}

std::vector<int64_t> HfTokenizer::Impl::Encode(std::string_view input, bool add_special) const {
  std::string lossy;
  std::string_view text = input;
  if (!IsWellFormed(text)) {
    lossy = Utf8Lossy(text);  // a Rust str cannot hold invalid UTF-8; U+FFFD stands in
    text = lossy;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (!text.empty()) {
    std::vector<TokenMatcher::Match> found;
    raw_matcher.Find(text, &found);
    size_t pos = 0;
    for (const auto& m : found) {
      if (m.start > pos)
        EncodeSegment(std::string(text.substr(pos, m.start - pos)), pos == 0, &ids);
      ids.push_back(m.id);
      pos = m.end;
    }
    if (pos < text.size()) EncodeSegment(std::string(text.substr(pos)), pos == 0, &ids);
  }
  std::vector<int64_t> out;
  out.reserve(ids.size() + template_before.size() + template_after.size());
  if (add_special && has_template)
    out.insert(out.end(), template_before.begin(), template_before.end());
  out.insert(out.end(), ids.begin(), ids.end());
  if (add_special && has_template)
    out.insert(out.end(), template_after.begin(), template_after.end());
  return out;
}

std::string HfTokenizer::Impl::Decode(const std::vector<int64_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    if (id >= 0 && id < static_cast<int64_t>(id_to_token.size()) && id_known[id]) {
      tokens.push_back(id_to_token[id]);
    }
  }
  std::string text;
  if (!has_decoder) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) text += ' ';
      text += tokens[i];
    }
  } else {
    for (const Decoder& d : decoders) ApplyDecoder(d, &tokens);
    for (const std::string& t : tokens) text += t;
  }
  return clean_up_spaces ? CleanUpTokenization(std::move(text)) : text;
}

// ---------------------------------------------------------------------------------------------

HfTokenizer::HfTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::~HfTokenizer() = default;

StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Load(const std::string& json_path,
                                                         const std::string& config_path) {
  auto root = ReadJsonFile(json_path);
  if (!root.ok()) return root.status();
  auto impl = std::make_unique<Impl>();
  const Reader r(json_path);
  MOREH_RETURN_IF_ERROR(impl->LoadJson(root.value(), r));
  if (!config_path.empty()) {
    auto config = ReadJsonFile(config_path);
    if (!config.ok()) return config.status();
    MOREH_RETURN_IF_ERROR(impl->ApplyConfig(config.value(), config_path));
  }
  return std::unique_ptr<HfTokenizer>(new HfTokenizer(std::move(impl)));
}

std::vector<int64_t> HfTokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  return impl_->Encode(text, add_special_tokens);
}
std::string HfTokenizer::Decode(const std::vector<int64_t>& ids) const {
  return impl_->Decode(ids);
}
int64_t HfTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_to_token.size()); }
int64_t HfTokenizer::bos_id() const { return impl_->bos; }
int64_t HfTokenizer::eos_id() const { return impl_->eos; }
int64_t HfTokenizer::pad_id() const { return impl_->pad; }
int64_t HfTokenizer::TokenToId(std::string_view token) const { return impl_->IdOf(token); }

size_t HfTokenizer::PrefixBytesFor(int64_t n) const {
  if (!impl_->prefix_bound) return 0;
  // No token covers more than max_token_bytes of normalized text, nor more than `shrink` times
  // that of the input; twice the tokens keeps the cut far from the last token kept.
  const double bytes = static_cast<double>(std::max<int64_t>(n, 1)) *
                           static_cast<double>(std::max<size_t>(impl_->max_token_bytes, 4)) *
                           impl_->shrink * 2 +
                       256;
  return bytes > 1e15 ? 0 : static_cast<size_t>(bytes);
}

}  // namespace moreh::data
