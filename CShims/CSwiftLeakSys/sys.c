#include "CSwiftLeakSys.h"
