// The shared-memory layer and everything above it use the public UniqueFd
// (ubroker/unique_fd.hpp) under this name.
#pragma once

#include "ubroker/unique_fd.hpp"

namespace ubroker::shm {

using UniqueFd = ubroker::UniqueFd;

}  // namespace ubroker::shm
