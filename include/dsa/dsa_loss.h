/* dsa/dsa_loss.h — C ABI of the indexer KL losses. Included by dsa/dsa_training.h. */
#ifndef DSA_DSA_LOSS_H_
#define DSA_DSA_LOSS_H_
#endif
