// src/common/last_error.hpp — the thread-local message of the last failing call.
#pragma once

#include "dsa/types.hpp"

namespace dsa::detail {
// Stores a failing status's message as the thread's last error; returns the status unchanged.
const Status& record(const Status& s);
const char* last_error_cstr();
}  // namespace dsa::detail
