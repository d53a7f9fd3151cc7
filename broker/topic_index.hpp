// TopicIndex<T>: a trie over dot-separated pattern tokens mapping subscription patterns to
// entries of type T (pointers), answering "which entries match this topic" in time
// proportional to the topic's tokens, not the number of subscriptions. '*' children and '>'
// lists sit beside the literal children of each node. Must agree with proto::pattern_matches
// (tests check it). Single-threaded (the broker's event loop).
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ubroker/proto/string_hash.hpp"

namespace ubroker::broker {

using proto::StringHash;

template <class T>
class TopicIndex {
 public:
  void insert(std::string_view pattern, T entry) { descend(pattern, true)->entries(pattern).push_back(entry); }

  // Removes one entry previously inserted under `pattern`; prunes empty nodes.
  void erase(std::string_view pattern, T entry) { erase_at(root_, pattern, entry); }

  // Calls fn(entry) for every entry whose pattern matches `topic` (a valid topic).
  template <class Fn>
  void match(std::string_view topic, Fn&& fn) const {
    match_at(root_, topic, fn);
  }

  [[nodiscard]] bool empty() const noexcept { return root_.empty(); }

 private:
  struct Node {
    std::unordered_map<std::string, std::unique_ptr<Node>, StringHash, std::equal_to<>> children;
    std::unique_ptr<Node> star;
    std::vector<T> exact;  // patterns ending at this node
    std::vector<T> rest;   // patterns ending in '>' below this node

    // The list a pattern's final token selects (`>` or an ordinary end).
    std::vector<T>& entries(std::string_view pattern) { return pattern.ends_with(">") ? rest : exact; }
    [[nodiscard]] bool empty() const noexcept { return children.empty() && !star && exact.empty() && rest.empty(); }
  };

  static std::string_view first_token(std::string_view s, std::string_view& rest) {
    const auto dot = s.find('.');
    if (dot == std::string_view::npos) {
      rest = {};
      return s;
    }
    rest = s.substr(dot + 1);
    return s.substr(0, dot);
  }

  // The node a pattern's entries live in ('>' patterns live in the node above the '>').
  Node* descend(std::string_view pattern, bool create) {
    Node* node = &root_;
    std::string_view rest = pattern;
    while (!rest.empty()) {
      std::string_view next;
      const std::string_view token = first_token(rest, next);
      if (token == ">") break;
      if (token == "*") {
        if (!node->star) {
          if (!create) return nullptr;
          node->star = std::make_unique<Node>();
        }
        node = node->star.get();
      } else {
        auto it = node->children.find(token);
        if (it == node->children.end()) {
          if (!create) return nullptr;
          it = node->children.emplace(std::string(token), std::make_unique<Node>()).first;
        }
        node = it->second.get();
      }
      rest = next;
    }
    return node;
  }

  // Returns true when `node` became empty and may be pruned by its parent.
  bool erase_at(Node& node, std::string_view pattern, T entry) {
    std::string_view next;
    const std::string_view token = pattern.empty() ? std::string_view{} : first_token(pattern, next);
    if (pattern.empty() || token == ">") {
      auto& list = node.entries(pattern.empty() ? std::string_view{} : pattern);
      if (auto it = std::find(list.begin(), list.end(), entry); it != list.end()) {
        *it = list.back();
        list.pop_back();
      }
      return node.empty();
    }
    if (token == "*") {
      if (node.star && erase_at(*node.star, next, entry)) node.star.reset();
    } else if (auto it = node.children.find(token); it != node.children.end()) {
      if (erase_at(*it->second, next, entry)) node.children.erase(it);
    }
    return node.empty();
  }

  template <class Fn>
  static void match_at(const Node& node, std::string_view topic, Fn& fn) {
    // Every '>' here matches when at least one token remains.
    if (!topic.empty()) {
      for (const T& e : node.rest) fn(e);
    } else {
      for (const T& e : node.exact) fn(e);
      return;
    }
    std::string_view next;
    const std::string_view token = first_token(topic, next);
    // `next` empty with a trailing token means this was the last token.
    const std::string_view remaining = next.data() == nullptr ? std::string_view{} : next;
    if (auto it = node.children.find(token); it != node.children.end()) match_at(*it->second, remaining, fn);
    if (node.star) match_at(*node.star, remaining, fn);
  }

  Node root_;
};

}  // namespace ubroker::broker
