/* SPDX-License-Identifier: MIT */
#include "dmop_version.h"

/* Swift cannot take a value from -D, so the version reaches it through C. */
const char *dmop_broker_version(void)
{
    return DMOP_BROKER_VERSION;
}
