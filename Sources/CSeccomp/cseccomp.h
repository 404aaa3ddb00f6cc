/* SPDX-License-Identifier: MIT */
#ifndef DMOP_CSECCOMP_H
#define DMOP_CSECCOMP_H
#include <seccomp.h>
#include <sys/syscall.h>
#endif
