// src/common/guarded.hpp — turns any exception escaping an op body into a kInternal status.
#pragma once

#include <exception>
#include <new>
#include <string>

#include "dsa/types.hpp"

namespace dsa::detail {

template <class Body>
Status guarded(const char* op, Body&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal, std::string(op) + ": out of host memory");
  } catch (const std::exception& e) {
    return Status(StatusCode::kInternal, std::string(op) + ": internal error: " + e.what());
  } catch (...) {
    return Status(StatusCode::kInternal, std::string(op) + ": unknown internal error");
  }
}

}  // namespace dsa::detail
