#ifndef CSWIFTLEAK_DW_H
#define CSWIFTLEAK_DW_H
#endif
