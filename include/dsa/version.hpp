// dsa/version.hpp — library version and the export macro.
#pragma once

#define DSA_VERSION_MAJOR 0
#define DSA_VERSION_MINOR 1
#define DSA_VERSION_PATCH 0
#define DSA_STRINGIFY_(x) #x
#define DSA_STRINGIFY(x) DSA_STRINGIFY_(x)

#if defined(_WIN32)
#define DSA_API __declspec(dllexport)
#else
#define DSA_API __attribute__((visibility("default")))
#endif

namespace dsa {
// "MAJOR.MINOR.PATCH" of the library actually loaded (may differ from the header's macros).
DSA_API const char* version_string();
}  // namespace dsa
