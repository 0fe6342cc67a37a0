#ifndef CSWIFTLEAK_SYS_H
#define CSWIFTLEAK_SYS_H
#endif
