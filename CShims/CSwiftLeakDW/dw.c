#include "CSwiftLeakDW.h"
