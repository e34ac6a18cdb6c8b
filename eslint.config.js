import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'sdk/dist/**',
      'node_modules/**',
      'coverage/**',
      '.custos/**',
      '.custos-demo/**',
      'jest.config.cjs',
      'eslint.config.js',
      '.dependency-cruiser.cjs',
      'bench/*.mjs',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-extraneous-class': 'off',
      'no-console': 'error',
    },
  },
  {
    // Settings are read and validated in one place, src/config/, which fails at boot naming the variable
    // and masks sensitive values; a read anywhere else escapes both. Tests and benchmarks set up processes
    // and may read it.
    files: ['src/**/*.ts'],
    ignores: ['src/config/**'],
    rules: {
      'no-restricted-properties': [
        'error',
        {
          object: 'process',
          property: 'env',
          message: 'Read settings from the Config object (src/config/).',
        },
      ],
      'no-restricted-imports': [
        'error',
        {
          paths: ['process', 'node:process'].map((name) => ({
            name,
            importNames: ['env'],
            message: 'Read settings from the Config object (src/config/).',
          })),
        },
      ],
    },
  },
  {
    // One error model: services throw their domain's exception (its code from the domain's enum), and only
    // src/http/ turns codes into HTTP statuses. Nest's HttpException family would choose a status in a
    // service, and the base CustosException would take a code from no enum.
    files: ['src/**/*.ts'],
    ignores: ['src/config/**', 'src/http/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            ...['process', 'node:process'].map((name) => ({
              name,
              importNames: ['env'],
              message: 'Read settings from the Config object (src/config/).',
            })),
            {
              name: '@nestjs/common',
              importNames: [
                'HttpException',
                'HttpStatus',
                'BadRequestException',
                'UnauthorizedException',
                'ForbiddenException',
                'NotFoundException',
                'ConflictException',
                'InternalServerErrorException',
                'ServiceUnavailableException',
              ],
              message: "Throw the domain's exception (src/<domain>/<domain>.errors.ts or CommonException).",
            },
          ],
        },
      ],
      'no-restricted-syntax': [
        'error',
        {
          selector: "NewExpression[callee.name='CustosException']",
          message: "Throw the domain's exception (CommonException, CryptoException, ...), whose code is from its enum.",
        },
      ],
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      'no-console': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/unbound-method': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
  prettier,
);
