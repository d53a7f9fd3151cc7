/* UBROKER_API marks what libubroker.so exports: the public C and C++ API, nothing else (the
 * library is built with hidden visibility). Shared by the C and the C++ headers. */
#ifndef UBROKER_EXPORT_H
#define UBROKER_EXPORT_H

#if defined(__GNUC__)
#define UBROKER_API __attribute__((visibility("default")))
#else
#define UBROKER_API
#endif

#endif /* UBROKER_EXPORT_H */
