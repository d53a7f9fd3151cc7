// to_json, json_string (see json.hpp).
#include "json.hpp"

#include <google/protobuf/descriptor.h>

#include "ubroker/proto/utf8.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

namespace ubroker::ctl {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// The length of the valid UTF-8 sequence at s[i], or 0.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  char32_t cp = 0;
  return proto::utf8_sequence(s, i, cp);
}

}  // namespace

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const auto v = (static_cast<unsigned>(static_cast<unsigned char>(bytes[i])) << 16) |
                   (static_cast<unsigned>(static_cast<unsigned char>(bytes[i + 1])) << 8) |
                   static_cast<unsigned char>(bytes[i + 2]);
    for (int shift : {18, 12, 6, 0}) out.push_back(kAlphabet[(v >> shift) & 0x3f]);
  }
  if (i < bytes.size()) {
    unsigned v = static_cast<unsigned>(static_cast<unsigned char>(bytes[i])) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out.push_back(kAlphabet[(v >> 18) & 0x3f]);
    out.push_back(kAlphabet[(v >> 12) & 0x3f]);
    out.push_back(i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 0x3f] : '=');
    out.push_back('=');
  }
  return out;
}

bool valid_utf8(std::string_view bytes) {
  for (std::size_t i = 0; i < bytes.size();) {
    const std::size_t n = utf8_length(bytes, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

namespace {

class Writer {
 public:
  explicit Writer(bool pretty) : pretty_(pretty) {}
  std::string take() { return std::move(out_); }

  void message(const Message& m, int depth) {
    const Reflection* r = m.GetReflection();
    const auto* d = m.GetDescriptor();
    out_ += '{';
    bool first = true;
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      // Every scalar is written (a zero is a value, not an absence); unset sub-messages are not.
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated() && !r->HasField(m, f)) continue;
      separator(first, depth + 1);
      out_ += json_string(f->name());
      out_ += pretty_ ? ": " : ":";
      if (f->is_map()) {
        map(m, f, depth + 1);
      } else if (f->is_repeated()) {
        out_ += '[';
        bool first_item = true;
        for (int k = 0; k < r->FieldSize(m, f); ++k) {
          separator(first_item, depth + 2);
          value(m, f, k, depth + 2);
        }
        close(first_item, depth + 1, ']');
      } else {
        value(m, f, -1, depth + 1);
      }
    }
    close(first, depth, '}');
  }

 private:
  void separator(bool& first, int depth) {
    if (!first) out_ += ',';
    first = false;
    if (pretty_) {
      out_ += '\n';
      out_.append(static_cast<std::size_t>(depth) * 2, ' ');
    }
  }
  void close(bool empty, int depth, char bracket) {
    if (pretty_ && !empty) {
      out_ += '\n';
      out_.append(static_cast<std::size_t>(depth) * 2, ' ');
    }
    out_ += bracket;
  }
  void number(double v) {
    if (!std::isfinite(v)) {
      out_ += "null";
      return;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out_ += buf;
  }
  // Field f of m (element k of a repeated field, or -1).
  void value(const Message& m, const FieldDescriptor* f, int k, int depth) {
    const Reflection* r = m.GetReflection();
    const bool rep = k >= 0;
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32: out_ += std::to_string(rep ? r->GetRepeatedInt32(m, f, k) : r->GetInt32(m, f)); break;
      case FieldDescriptor::CPPTYPE_INT64: out_ += std::to_string(rep ? r->GetRepeatedInt64(m, f, k) : r->GetInt64(m, f)); break;
      case FieldDescriptor::CPPTYPE_UINT32: out_ += std::to_string(rep ? r->GetRepeatedUInt32(m, f, k) : r->GetUInt32(m, f)); break;
      case FieldDescriptor::CPPTYPE_UINT64: out_ += std::to_string(rep ? r->GetRepeatedUInt64(m, f, k) : r->GetUInt64(m, f)); break;
      case FieldDescriptor::CPPTYPE_DOUBLE: number(rep ? r->GetRepeatedDouble(m, f, k) : r->GetDouble(m, f)); break;
      case FieldDescriptor::CPPTYPE_FLOAT: number(rep ? r->GetRepeatedFloat(m, f, k) : r->GetFloat(m, f)); break;
      case FieldDescriptor::CPPTYPE_BOOL: out_ += (rep ? r->GetRepeatedBool(m, f, k) : r->GetBool(m, f)) ? "true" : "false"; break;
      case FieldDescriptor::CPPTYPE_ENUM: {
        const auto* e = rep ? r->GetRepeatedEnum(m, f, k) : r->GetEnum(m, f);
        out_ += json_string(e->name());
        break;
      }
      case FieldDescriptor::CPPTYPE_STRING: {
        const std::string s = rep ? r->GetRepeatedString(m, f, k) : r->GetString(m, f);
        out_ += f->type() == FieldDescriptor::TYPE_BYTES ? '"' + base64(s) + '"' : json_string(s);
        break;
      }
      case FieldDescriptor::CPPTYPE_MESSAGE:
        message(rep ? r->GetRepeatedMessage(m, f, k) : r->GetMessage(m, f), depth);
        break;
    }
  }
  // A map field: its entries are messages of (key, value); keys become member names.
  void map(const Message& m, const FieldDescriptor* f, int depth) {
    const Reflection* r = m.GetReflection();
    out_ += '{';
    bool first = true;
    for (int k = 0; k < r->FieldSize(m, f); ++k) {
      const Message& entry = r->GetRepeatedMessage(m, f, k);
      const FieldDescriptor* key = entry.GetDescriptor()->map_key();
      const FieldDescriptor* val = entry.GetDescriptor()->map_value();
      separator(first, depth + 1);
      Writer key_text(false);
      key_text.value(entry, key, -1, 0);
      std::string name = key_text.take();
      out_ += name.starts_with('"') ? name : '"' + name + '"';
      out_ += pretty_ ? ": " : ":";
      value(entry, val, -1, depth + 1);
    }
    close(first, depth, '}');
  }

  bool pretty_;
  std::string out_;
};

}  // namespace

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size();) {
    const char c = text[i];
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
      ++i;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
      ++i;
    } else if (const std::size_t n = utf8_length(text, i); n != 0) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      out += "\xef\xbf\xbd";  // U+FFFD for a byte that is not valid UTF-8
      ++i;
    }
  }
  out += '"';
  return out;
}

std::string to_json(const google::protobuf::Message& message, bool pretty) {
  Writer w(pretty);
  w.message(message, 0);
  std::string out = w.take();
  out += '\n';
  return out;
}

std::string json_payload(std::span<const std::byte> payload) {
  const std::string_view bytes(reinterpret_cast<const char*>(payload.data()), payload.size());
  if (valid_utf8(bytes)) return "\"payload\":" + json_string(bytes);
  return "\"payload_base64\":\"" + base64(bytes) + "\"";
}

std::string json_headers(const ubroker::Headers& headers) {
  std::vector<std::pair<std::string_view, std::vector<std::string_view>>> by_key;
  for (const ubroker::HeaderField& h : headers) {
    auto it = std::find_if(by_key.begin(), by_key.end(), [&](const auto& e) { return e.first == h.key; });
    if (it == by_key.end()) it = by_key.insert(by_key.end(), {h.key, {}});
    it->second.push_back(h.value);
  }
  std::string out = "{";
  for (std::size_t i = 0; i < by_key.size(); ++i) {
    if (i != 0) out += ',';
    out += json_string(by_key[i].first);
    out += ":[";
    for (std::size_t j = 0; j < by_key[i].second.size(); ++j) {
      if (j != 0) out += ',';
      out += json_string(by_key[i].second[j]);
    }
    out += ']';
  }
  return out + "}";
}

}  // namespace ubroker::ctl
