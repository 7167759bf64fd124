/*
 * Symbol export macro. The shared library is built with -fvisibility=hidden;
 * only declarations marked EF_API are part of the ABI.
 */
#ifndef EDGEFL_EXPORT_H
#define EDGEFL_EXPORT_H

#if defined(__GNUC__)
#define EF_API __attribute__((visibility("default")))
#else
#define EF_API
#endif

#if defined(__GNUC__)
#define EF_NODISCARD __attribute__((warn_unused_result))
#else
#define EF_NODISCARD
#endif

#endif /* EDGEFL_EXPORT_H */
