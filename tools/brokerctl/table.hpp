// Aligned text tables for brokerctl's listings: columns sized to their widest cell. Cells come
// from the broker and, through it, from clients (names, topics): any byte that is not
// printable ASCII is shown as '?', so nothing a client chose reaches the terminal as a control
// sequence.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace ubroker::ctl {

class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) {
    for (auto& cell : row) {
      for (char& c : cell) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u >= 0x7f) c = '?';
      }
    }
    rows_.push_back(std::move(row));
  }
  void print(std::FILE* out) const {
    std::vector<std::size_t> width;
    for (const auto& r : rows_) {
      if (width.size() < r.size()) width.resize(r.size());
      for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    }
    for (const auto& r : rows_) {
      std::string line;
      for (std::size_t i = 0; i < r.size(); ++i) {
        line += r[i];
        if (i + 1 < r.size()) line.append(width[i] - r[i].size() + 2, ' ');
      }
      std::fprintf(out, "%s\n", line.c_str());
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace ubroker::ctl
