/* dsa/dsa_training.h — C ABI of the training ops (sparse MLA backward, indexer backward).
 * Included by dsa/dsa.h; not meant to be included alone. */
#ifndef DSA_DSA_TRAINING_H_
#define DSA_DSA_TRAINING_H_
#include "dsa/dsa_loss.h"
#endif
