// ubroker::Result<T, E>: a value or an error, as std::expected. Under C++23 (where the standard
// library has <expected>) it *is* std::expected; under C++20 it is detail::Expected below, which
// offers the part of std::expected's interface a caller of this API uses (operator bool,
// has_value, ->, *, value(), error(), value_or) and has its exact layout (libstdc++: a union of
// value and error, then the flag), so a program built as C++20 and one built as C++23 call the
// same libubroker.so. The library checks that layout where it is built (result_abi.cpp).
#pragma once

#include <exception>
#include <memory>
#include <type_traits>
#include <utility>
#include <version>

#if defined(__cpp_lib_expected) && __cpp_lib_expected >= 202202L
#include <expected>
#define UBROKER_RESULT_IS_STD_EXPECTED 1
#else
#define UBROKER_RESULT_IS_STD_EXPECTED 0
#endif

namespace ubroker::detail {

// What value() throws when there is no value (std::bad_expected_access under C++23).
class BadResultAccess : public std::exception {
 public:
  [[nodiscard]] const char* what() const noexcept override { return "ubroker::Result::value(): holds an error"; }
};

template <class E>
class Unexpected {
 public:
  explicit Unexpected(E e) : error_(std::move(e)) {}
  [[nodiscard]] E& error() & noexcept { return error_; }
  [[nodiscard]] E&& error() && noexcept { return std::move(error_); }
  [[nodiscard]] const E& error() const& noexcept { return error_; }

 private:
  E error_;
};

template <class T, class E>
class Expected {
 public:
  using value_type = T;
  using error_type = E;

  Expected() requires std::is_default_constructible_v<T> : val_(), has_value_(true) {}
  Expected(const T& v) requires std::is_copy_constructible_v<T> : val_(v), has_value_(true) {}  // NOLINT: implicit, as std::expected
  Expected(T&& v) : val_(std::move(v)), has_value_(true) {}                                      // NOLINT
  Expected(Unexpected<E> u) : unex_(std::move(u).error()), has_value_(false) {}                   // NOLINT
  Expected(const Expected& o) requires(std::is_copy_constructible_v<T> && std::is_copy_constructible_v<E>)
      : has_value_(o.has_value_) {
    if (has_value_) std::construct_at(&val_, o.val_);
    else std::construct_at(&unex_, o.unex_);
  }
  Expected(Expected&& o) noexcept(std::is_nothrow_move_constructible_v<T> && std::is_nothrow_move_constructible_v<E>)
      : has_value_(o.has_value_) {
    if (has_value_) std::construct_at(&val_, std::move(o.val_));
    else std::construct_at(&unex_, std::move(o.unex_));
  }
  Expected& operator=(const Expected& o) requires(std::is_copy_constructible_v<T> && std::is_copy_constructible_v<E>) {
    if (this != &o) {
      destroy();
      construct_from(o);
    }
    return *this;
  }
  Expected& operator=(Expected&& o) noexcept(std::is_nothrow_move_constructible_v<T> &&
                                             std::is_nothrow_move_constructible_v<E>) {
    if (this != &o) {
      destroy();
      construct_from(std::move(o));
    }
    return *this;
  }
  ~Expected() { destroy(); }

  [[nodiscard]] bool has_value() const noexcept { return has_value_; }
  explicit operator bool() const noexcept { return has_value_; }
  [[nodiscard]] T* operator->() noexcept { return &val_; }
  [[nodiscard]] const T* operator->() const noexcept { return &val_; }
  [[nodiscard]] T& operator*() & noexcept { return val_; }
  [[nodiscard]] const T& operator*() const& noexcept { return val_; }
  [[nodiscard]] T&& operator*() && noexcept { return std::move(val_); }
  [[nodiscard]] T& value() & { return has_value_ ? val_ : throw BadResultAccess(); }
  [[nodiscard]] const T& value() const& { return has_value_ ? val_ : throw BadResultAccess(); }
  [[nodiscard]] T&& value() && { return has_value_ ? std::move(val_) : throw BadResultAccess(); }
  [[nodiscard]] E& error() & noexcept { return unex_; }
  [[nodiscard]] const E& error() const& noexcept { return unex_; }
  [[nodiscard]] E&& error() && noexcept { return std::move(unex_); }
  template <class U>
  [[nodiscard]] T value_or(U&& fallback) const& {
    return has_value_ ? val_ : static_cast<T>(std::forward<U>(fallback));
  }
  template <class U>
  [[nodiscard]] T value_or(U&& fallback) && {
    return has_value_ ? std::move(val_) : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  void destroy() noexcept {
    if (has_value_) std::destroy_at(&val_);
    else std::destroy_at(&unex_);
  }
  template <class O>
  void construct_from(O&& o) {
    has_value_ = o.has_value_;
    if (has_value_) std::construct_at(&val_, std::forward<O>(o).val_);
    else std::construct_at(&unex_, std::forward<O>(o).unex_);
  }

  union {
    T val_;
    E unex_;
  };
  bool has_value_;
};

template <class E>
class Expected<void, E> {
 public:
  using value_type = void;
  using error_type = E;

  Expected() noexcept : has_value_(true) {}
  Expected(Unexpected<E> u) : unex_(std::move(u).error()), has_value_(false) {}  // NOLINT: implicit, as std::expected
  Expected(const Expected& o) requires std::is_copy_constructible_v<E> : has_value_(o.has_value_) {
    if (!has_value_) std::construct_at(&unex_, o.unex_);
  }
  Expected(Expected&& o) noexcept(std::is_nothrow_move_constructible_v<E>) : has_value_(o.has_value_) {
    if (!has_value_) std::construct_at(&unex_, std::move(o.unex_));
  }
  Expected& operator=(const Expected& o) requires std::is_copy_constructible_v<E> {
    if (this != &o) {
      destroy();
      has_value_ = o.has_value_;
      if (!has_value_) std::construct_at(&unex_, o.unex_);
    }
    return *this;
  }
  Expected& operator=(Expected&& o) noexcept(std::is_nothrow_move_constructible_v<E>) {
    if (this != &o) {
      destroy();
      has_value_ = o.has_value_;
      if (!has_value_) std::construct_at(&unex_, std::move(o.unex_));
    }
    return *this;
  }
  ~Expected() { destroy(); }

  [[nodiscard]] bool has_value() const noexcept { return has_value_; }
  explicit operator bool() const noexcept { return has_value_; }
  void operator*() const noexcept {}
  void value() const {
    if (!has_value_) throw BadResultAccess();
  }
  [[nodiscard]] E& error() & noexcept { return unex_; }
  [[nodiscard]] const E& error() const& noexcept { return unex_; }
  [[nodiscard]] E&& error() && noexcept { return std::move(unex_); }

 private:
  void destroy() noexcept {
    if (!has_value_) std::destroy_at(&unex_);
  }

  struct NoValue {};
  union {
    NoValue void_;
    E unex_;
  };
  bool has_value_;
};

}  // namespace ubroker::detail

namespace ubroker {

#if UBROKER_RESULT_IS_STD_EXPECTED
template <class T, class E>
using BasicResult = std::expected<T, E>;
#else
template <class T, class E>
using BasicResult = detail::Expected<T, E>;
#endif

}  // namespace ubroker
