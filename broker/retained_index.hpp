// RetainedIndex<T>: the retained topics in a trie over their tokens, so the values a pattern
// matches are found by walking only the branches it can match (a literal token is one child,
// `*` every child of one node, `>` a whole subtree), never by scanning the store. Children are
// kept in token order, so a walk can stop anywhere and resume later after the last topic it
// visited, whatever was added or removed in between: that is what paces a large replay over
// several turns of the event loop.
//
// Topic order is token by token (a topic comes before the longer ones it is a prefix of):
// topic_less() below. Single-threaded (the broker's event loop).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ubroker::broker {

// Splits at '.' (a valid topic or pattern: no empty tokens).
inline std::vector<std::string_view> split_tokens(std::string_view s) {
  std::vector<std::string_view> out;
  while (true) {
    const auto dot = s.find('.');
    out.push_back(s.substr(0, dot));
    if (dot == std::string_view::npos) return out;
    s.remove_prefix(dot + 1);
  }
}

// The order of RetainedIndex walks: token by token, a prefix first.
inline bool topic_less(std::string_view a, std::string_view b) {
  while (true) {
    const auto da = a.find('.');
    const auto db = b.find('.');
    const std::string_view ta = a.substr(0, da);
    const std::string_view tb = b.substr(0, db);
    if (ta != tb) return ta < tb;
    if (db == std::string_view::npos) return false;  // b ends here: a == b or a is longer
    if (da == std::string_view::npos) return true;   // a ends here, b goes on
    a.remove_prefix(da + 1);
    b.remove_prefix(db + 1);
  }
}

template <class T>
class RetainedIndex {
 public:
  // Sets the entry of `topic` (there is at most one per topic).
  void set(std::string_view topic, T* entry) {
    Node* n = &root_;
    for (std::string_view token : split_tokens(topic)) {
      auto it = n->children.find(token);
      if (it == n->children.end()) it = n->children.emplace(std::string(token), std::make_unique<Node>()).first;
      n = it->second.get();
    }
    n->entry = entry;
  }

  // Removes the entry of `topic`, and the nodes that held nothing else.
  void erase(std::string_view topic) {
    const auto tokens = split_tokens(topic);
    erase_at(root_, tokens, 0);
  }

  // Calls fn(T&) for each entry whose topic the (valid) pattern matches and that comes after
  // `after` in topic order ("" = from the first), in topic order, until fn returns false.
  // Returns true when the walk reached the end.
  template <class Fn>
  bool walk(std::string_view pattern, std::string_view after, Fn&& fn) const {
    const Walk w{split_tokens(pattern), after.empty() ? std::vector<std::string_view>{} : split_tokens(after)};
    return walk_at(w, root_, 0, 0, false, !after.empty(), fn);
  }

  [[nodiscard]] bool empty() const noexcept { return root_.children.empty() && root_.entry == nullptr; }

 private:
  struct Node {
    std::map<std::string, std::unique_ptr<Node>, std::less<>> children;
    T* entry = nullptr;
  };
  struct Walk {
    std::vector<std::string_view> pattern;
    std::vector<std::string_view> after;
  };

  static bool erase_at(Node& n, const std::vector<std::string_view>& tokens, std::size_t depth) {
    if (depth == tokens.size()) {
      n.entry = nullptr;
    } else if (auto it = n.children.find(tokens[depth]); it != n.children.end()) {
      if (erase_at(*it->second, tokens, depth + 1)) n.children.erase(it);
    }
    return n.entry == nullptr && n.children.empty();
  }

  // `n` is reached by a path of `depth` tokens that matches the pattern's first `pi` tokens
  // (or, with `rest`, a '>' that matches everything below). `bounded`: the path so far equals
  // the first `depth` tokens of `after`, so only what sorts after it may be visited.
  template <class Fn>
  static bool walk_at(const Walk& w, const Node& n, std::size_t depth, std::size_t pi, bool rest, bool bounded,
                      Fn& fn) {
    const bool at_or_before_after = bounded && depth <= w.after.size();
    const bool pattern_done = !rest && pi == w.pattern.size();
    if (n.entry != nullptr && (rest || pattern_done) && !at_or_before_after && !fn(*n.entry)) return false;
    if (pattern_done) return true;
    const std::string_view token = rest ? std::string_view{} : w.pattern[pi];
    const bool all = rest || token == "*" || token == ">";
    const bool child_rest = rest || token == ">";
    const std::size_t child_pi = child_rest ? pi : pi + 1;
    const bool bound_here = bounded && depth < w.after.size();
    const std::string_view floor = bound_here ? w.after[depth] : std::string_view{};
    if (!all) {
      if (bound_here && token < floor) return true;
      auto it = n.children.find(token);
      if (it == n.children.end()) return true;
      return walk_at(w, *it->second, depth + 1, child_pi, false, bound_here && token == floor, fn);
    }
    for (auto it = bound_here ? n.children.lower_bound(floor) : n.children.begin(); it != n.children.end(); ++it) {
      if (!walk_at(w, *it->second, depth + 1, child_pi, child_rest, bound_here && it->first == floor, fn)) {
        return false;
      }
    }
    return true;
  }

  Node root_;
};

}  // namespace ubroker::broker
