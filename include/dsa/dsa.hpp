// dsa/dsa.hpp — umbrella include of the C++ API. No CUDA and no Eigen headers.
#pragma once

#include "dsa/version.hpp"
#include "dsa/types.hpp"
#include "dsa/numerics.hpp"
#include "dsa/params.hpp"
#include "dsa/ops.hpp"
