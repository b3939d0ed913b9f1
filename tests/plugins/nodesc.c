/*
 * nodesc.c - a test shared object that is not a plugin.
 *
 * Exports nodesc_answer but no portcullis_plugin descriptor: the loader must
 * refuse it and name the missing symbol.
 */
int nodesc_answer(void);

/* nodesc_answer - something to export instead of the descriptor */
int
nodesc_answer(void)
{
	return 42;
}
